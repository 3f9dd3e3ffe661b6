"""ONNX's own backend node tests, run through bbjax.onnx.lower."""

from __future__ import annotations

import pytest

from bbjax.onnx import conformance, supported_ops


def test_op_table_is_broad():
    default_domain = {op for domain, op in supported_ops() if domain == ""}
    assert len(default_domain) >= 120


def test_exclusions_name_real_cases_with_reasons():
    names = {case.name for case in conformance.node_cases()}
    for name, reason in conformance.EXCLUDED.items():
        assert name in names, name
        assert reason.strip(), name


SHARDS = 4


def _assert_passes(report: conformance.Report) -> None:
    failures = "\n".join(f"{name}: {problem}" for name, problem in sorted(report.failed.items()))
    assert not report.failed, f"{report.summary()}\n{failures}"


@pytest.mark.slow
def test_onnx_node_conformance(capsys):
    report = conformance.run()
    with capsys.disabled():
        print("\n" + report.summary())
    assert len(report.ran) >= 1000, report.summary()
    _assert_passes(report)


def test_the_covering_cases_use_every_selected_op_type():
    covering = conformance.covering_cases()
    used = set().union(*(conformance.model_ops(c.model) for c in conformance.selected_cases()))
    assert set().union(*(conformance.model_ops(c.model) for c in covering)) == used
    assert len(used) >= 120 and len(covering) < len(conformance.selected_cases()) / 3


@pytest.mark.parametrize("shard", range(SHARDS))
def test_one_case_of_every_op_type_passes(shard):
    """The default suite's share of the sweep (the whole sweep is slow): the covering cases,
    split into shards that run in parallel."""
    report = conformance.run(cases=conformance.covering_cases()[shard::SHARDS])
    assert report.ran and len(report.ran) == len(report.passed) + len(report.failed)
    _assert_passes(report)


@pytest.mark.parametrize("name", ["test_add", "test_loop11", "test_if"])
def test_single_cases_pass(name):
    case = next(c for c in conformance.node_cases() if c.name == name)
    assert conformance.run_case(case) is None
