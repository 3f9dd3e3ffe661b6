"""Run ONNX's backend node tests through :func:`bbjax.onnx.lower`.

``python -m bbjax.onnx.conformance [OP ...]`` prints a report; the test suite asserts that
every selected case passes. A case is selected when every op it uses (subgraphs and model
functions included) is in :func:`supported_ops` and it is not excluded below.
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable

import jax
import numpy as np
import onnx
from onnx import numpy_helper

from bbjax.errors import DataDependentError
from bbjax.onnx.lower import lower, supported_ops

# Cases JAX cannot represent, each with its reason. Whole families are excluded by rule in
# `exclusion_reason` (string tensors); everything else must be listed here by name.
_BF16_SOFTMAX = ("the numpy reference rounds every partial softmax sum to bfloat16; XLA "
                 "accumulates bfloat16 in float32 (1-ulp bfloat16 differences)")
_UNSPECIFIED_RNG = ("expected outputs come from numpy's seeded generator; ONNX leaves the "
                    "random stream unspecified, so no other runtime can reproduce them")
EXCLUDED: dict[str, str] = {
    "test_training_dropout": _UNSPECIFIED_RNG,
    "test_training_dropout_default": _UNSPECIFIED_RNG,
    "test_training_dropout_default_mask": _UNSPECIFIED_RNG,
    "test_training_dropout_mask": _UNSPECIFIED_RNG,
    "test_attention_3d_causal_bf16_expanded": _BF16_SOFTMAX,
    "test_attention_4d_causal_bf16_expanded": _BF16_SOFTMAX,
    "test_attention_4d_attn_mask_causal_bf16_expanded": _BF16_SOFTMAX,
    "test_attention_4d_causal_padded_kv_bf16_expanded": _BF16_SOFTMAX,
    "test_attention_4d_padded_kv_bf16_expanded": _BF16_SOFTMAX,
}


@dataclass
class Report:
    ran: list[str] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)
    unsupported: int = 0

    def summary(self) -> str:
        return (f"ONNX node conformance: {len(self.passed)}/{len(self.ran)} selected cases passed "
                f"({len(self.excluded)} excluded, {self.unsupported} use unsupported ops)")


@functools.lru_cache(maxsize=1)
def node_cases() -> tuple[Any, ...]:
    """ONNX's backend node test cases (generated in memory by onnx)."""
    from onnx.backend.test.loader import load_model_tests
    return tuple(load_model_tests(kind="node"))


def model_ops(model: onnx.ModelProto) -> set[tuple[str, str]]:
    """Every ``(domain, op_type)`` the model runs, looking through subgraphs and functions."""
    functions = {(f.domain, f.name): f for f in model.functions}
    found: set[tuple[str, str]] = set()

    def visit(nodes: Iterable[onnx.NodeProto]) -> None:
        for node in nodes:
            key = (node.domain, node.op_type)
            if key in functions:
                visit(functions[key].node)
                continue
            found.add(("" if node.domain == "ai.onnx" else node.domain, node.op_type))
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g.node)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        visit(g.node)

    visit(model.graph.node)
    return found


def _to_numpy(value: Any) -> Any:
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list):
        return [_to_numpy(v) for v in value]
    return value


def _has_strings(values: Iterable[Any]) -> bool:
    for v in values:
        if isinstance(v, list) and _has_strings(v):
            return True
        if isinstance(v, np.ndarray) and v.dtype.kind in "OSU":
            return True
    return False


def exclusion_reason(case: Any) -> str | None:
    if case.name in EXCLUDED:
        return EXCLUDED[case.name]
    for inputs, outputs in case.data_sets:
        if _has_strings(_to_numpy(list(inputs)) + _to_numpy(list(outputs))):
            return "JAX has no string dtype"
    return None


def _run(model: onnx.ModelProto, inputs: list[Any]) -> list[Any]:
    fn = lower(model)
    try:
        return list(jax.jit(fn)(*inputs))
    except DataDependentError:
        return list(fn(*inputs))  # data-dependent shapes: run op by op with concrete values


def _compare(expected: Any, actual: Any, rtol: float, atol: float, where: str) -> None:
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            raise AssertionError(f"{where}: expected a sequence of {len(expected)}")
        for i, (e, a) in enumerate(zip(expected, actual)):
            _compare(e, a, rtol, atol, f"{where}[{i}]")
        return
    if expected is None:
        if actual is not None:
            raise AssertionError(f"{where}: expected an empty optional")
        return
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.dtype != expected.dtype:
        raise AssertionError(f"{where}: dtype {actual.dtype}, expected {expected.dtype}")
    if actual.shape != expected.shape:
        raise AssertionError(f"{where}: shape {actual.shape}, expected {expected.shape}")
    if expected.dtype.kind in "biu":
        np.testing.assert_array_equal(actual, expected, err_msg=where)
    else:
        np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64),
                                   rtol=rtol, atol=atol, err_msg=where)


def run_case(case: Any) -> str | None:
    """Run one case; ``None`` when it passes, else what went wrong."""
    try:
        with jax.enable_x64(True):
            for inputs, expected in case.data_sets:
                outputs = _run(case.model, _to_numpy(list(inputs)))
                expected = _to_numpy(list(expected))
                if len(outputs) < len(expected):
                    return f"{len(outputs)} outputs, expected {len(expected)}"
                for i, (e, a) in enumerate(zip(expected, outputs)):
                    _compare(e, a, case.rtol, case.atol, f"output {i}")
    except AssertionError as exc:
        return "mismatch: " + str(exc).strip().splitlines()[0][:300]
    except Exception as exc:  # report, never crash the sweep
        return f"{type(exc).__name__}: {str(exc).strip()[:300]}"
    return None


def selected_cases() -> tuple[Any, ...]:
    """The cases :func:`run` runs: every op they use is supported (not excluded ones)."""
    supported = supported_ops()
    return tuple(case for case in node_cases() if model_ops(case.model) <= supported
                 and exclusion_reason(case) is None)


def covering_cases() -> tuple[Any, ...]:
    """A few of :func:`selected_cases` that use every op type the selected ones use: per
    op type, its first case (in the suite's order) unless an earlier pick already uses it."""
    chosen, covered = [], set()
    for case in selected_cases():
        used = {op_type for _, op_type in model_ops(case.model)}
        if not used <= covered:
            chosen.append(case)
            covered |= used
    return tuple(chosen)


def run(ops: Iterable[str] | None = None, cases: Iterable[Any] | None = None) -> Report:
    """Run every selected case of ``cases`` (default: the whole suite), optionally only the
    cases using one of ``ops``."""
    wanted = set(ops) if ops else None
    supported = supported_ops()
    report = Report()
    for case in node_cases() if cases is None else cases:
        used = model_ops(case.model)
        if wanted is not None and not any(op_type in wanted for _, op_type in used):
            continue
        if not used <= supported:
            report.unsupported += 1
            continue
        reason = exclusion_reason(case)
        if reason is not None:
            report.excluded[case.name] = reason
            continue
        report.ran.append(case.name)
        problem = run_case(case)
        if problem is None:
            report.passed.append(case.name)
        else:
            report.failed[case.name] = problem
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ops", nargs="*", help="only cases using one of these op types")
    parser.add_argument("--missing", action="store_true",
                        help="list op types of the suite that bbjax does not implement")
    args = parser.parse_args(argv)
    if args.missing:
        counts: dict[str, int] = {}
        for case in node_cases():
            for key in model_ops(case.model) - supported_ops():
                counts[key[1]] = counts.get(key[1], 0) + 1
        for op_type, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print(f"{op_type}: {n} cases")
        return 0
    report = run(args.ops or None)
    for name, problem in sorted(report.failed.items()):
        print(f"FAIL {name}: {problem}")
    print(report.summary())
    return 0 if not report.failed else 1


if __name__ == "__main__":
    sys.exit(main())
