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


def test_onnx_node_conformance(capsys):
    report = conformance.run()
    with capsys.disabled():
        print("\n" + report.summary())
    assert len(report.ran) >= 1000, report.summary()
    failures = "\n".join(f"{name}: {problem}" for name, problem in sorted(report.failed.items()))
    assert not report.failed, f"{report.summary()}\n{failures}"


@pytest.mark.parametrize("name", ["test_add", "test_loop11", "test_if"])
def test_single_cases_pass(name):
    case = next(c for c in conformance.node_cases() if c.name == name)
    assert conformance.run_case(case) is None
