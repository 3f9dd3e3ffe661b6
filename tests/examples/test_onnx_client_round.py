"""examples/onnx_client_round.py: a FedAvg round with one onnxruntime client ends with the
global model of three JAX clients, and the model learns."""

from __future__ import annotations

import importlib.util
import pathlib

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "onnx_client_round.py"


def test_the_onnx_client_round_matches_three_jax_clients_and_learns(tmp_path):
    spec = importlib.util.spec_from_file_location("onnx_client_round", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    losses, difference = example.main(rounds=2, workdir=str(tmp_path))
    assert difference < 1e-5
    assert losses[-1] < losses[0]
    assert (tmp_path / "client.onnx").stat().st_size > 0
