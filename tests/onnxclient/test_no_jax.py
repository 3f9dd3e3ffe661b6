"""bbjax.onnxclient imports, decodes and runs without JAX: a fresh interpreter in which any
import of jax or jaxlib fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKER = """
import sys
class NoJax:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("jax", "jaxlib", "flax", "optax"):
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, NoJax())
for name in [m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib")]:
    del sys.modules[name]
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_blocker_blocks_jax():
    result = _run("import jax")
    assert result.returncode != 0 and "blocked in this test" in result.stderr


def test_onnxclient_imports_and_runs_a_model_without_jax():
    result = _run("""
        import numpy as np, onnx, sys
        from onnx import helper, TensorProto
        import bbjax.onnxclient
        from bbjax.onnxclient import OnnxClient, Outbound, codec
        graph = helper.make_graph(
            [helper.make_node("Add", ["state.s.v", "recv.p.0"], ["next_state.s.v"]),
             helper.make_node("Identity", ["next_state.s.v"], ["send.q.0"]),
             helper.make_node("Identity", ["peers.server"], ["send.q.peers"])], "g",
            [helper.make_tensor_value_info("state.s.v", TensorProto.FLOAT, [2]),
             helper.make_tensor_value_info("peers.server", TensorProto.INT32, [1]),
             helper.make_tensor_value_info("recv.p.0", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("next_state.s.v", TensorProto.FLOAT, [2]),
             helper.make_tensor_value_info("send.q.0", TensorProto.FLOAT, [2]),
             helper.make_tensor_value_info("send.q.peers", TensorProto.INT32, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        meta = {"format": 1, "partition": "m_client#0", "peer_class": "client", "hash": "",
                "compiler": "", "outputs": [], "inputs": ["peers.server"],
                "state": {"s": {"inputs": ["state.s.v"], "outputs": ["next_state.s.v"]}},
                "receives": [{"port": "p", "source_class": "self", "inputs": ["recv.p.0"],
                              "dtypes": ["float32"], "shapes": [[2]]}],
                "sends": [{"port": "q", "dest_class": "server", "gather": True,
                           "outputs": ["send.q.0"], "peers": "send.q.peers",
                           "deadline_ns": 5, "dtypes": ["float32"], "shapes": [[2]]}]}
        import json
        helper.set_model_props(model, {"bbjax.client": json.dumps(meta)})
        client = OnnxClient(model, peer=3, peers={"server": [0]},
                            state={"state.s.v": np.array([1, 2], np.float32)})
        x = np.array([10, 20], np.float32)
        fill = codec.Fill("p/0", codec.type_hash(x.dtype, x.shape), codec.encode_tensor(x))
        client.deliver(codec.encode(codec.Envelope("0", (fill,))))
        (out,) = client.poll()
        assert isinstance(out, Outbound) and out.peer == 0
        sent = codec.decode(out.data)
        assert sent.source == "3" and sent.deadline_ns == 5
        assert codec.decode_tensor(sent.fills[0].payload).tolist() == [11, 22]
        assert client.state["state.s.v"].tolist() == [11, 22]
        assert not [m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib")]
        print("no jax")
    """)
    assert result.returncode == 0, result.stderr
    assert "no jax" in result.stdout
