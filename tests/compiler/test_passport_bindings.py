"""The passport protects the binding table and the components bound to slots."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import onnx
import pytest

import bbjax
from bbjax.compiler import annotations as ann
from bbjax.compiler import verify_passport
from bbjax.compiler.passport import BINDING, FINGERPRINT, HASH, PARTS, content_hash
from bbjax.components import Component, Role
from bbjax.components.component import canonical_json
from bbjax.dsl import Graph, Module
from bbjax.errors import InstallError, PassportError, SimulationError
from bbjax.runtime.install import install
from bbjax.runtime.node import NodeConfig
from bbjax.simulation import Simulation, simulate

ROOT = Path(__file__).resolve().parents[2]
POPULATION = {"self": 1, "node": 3}


def holder(size: int = 3, config: dict | None = None, name: str = "holder") -> Component:
    """A Protocol holding one float vector of ``size``."""
    return Component(Role.PROTOCOL, lambda key: {"v": jnp.zeros(size)},
                     {"value": lambda s: (s, s["v"]), "set": lambda s, v: ({"v": v}, ())},
                     name, config if config is not None else {"lr": 0.1, "batch_size": 8})


class Relay(Module):
    """``self`` sends its vector to every node, which keeps it."""

    name = "relay"

    def body(self, g: Graph) -> None:
        heard = g.send("v", g.slot("state").value(), to=g.peers("node"))
        g.slot("state").set(heard)


@pytest.fixture(scope="module")
def compiled() -> bbjax.Compiled:
    return bbjax.Compiler().bind("state", holder()).compile(Relay())


def _props(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def _with_props(compiled: bbjax.Compiled, props: dict[str, str]) -> bbjax.Compiled:
    model = ann.copy_model(compiled.model)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    return bbjax.Compiled(model)


def _rehashed(compiled: bbjax.Compiled, props: dict[str, str]) -> bbjax.Compiled:
    """``props`` with every partition hash recomputed, as a forger would."""
    props = dict(props)
    for function in compiled.model.functions:
        props[HASH + function.name] = content_hash(function, props)
    return _with_props(compiled, props)


def _install_node(compiled: bbjax.Compiled, component: Component):
    return install(1, compiled, ["relay_node"], {"state": component})


def _edited(compiled: bbjax.Compiled, prefix: str, value: str) -> bbjax.Compiled:
    """``compiled`` with its first passport entry under ``prefix`` set to ``value``."""
    props = _props(compiled.model)
    props[next(k for k in sorted(props) if k.startswith(prefix))] = value
    return _with_props(compiled, props)


def test_the_passport_records_the_fingerprint_and_parts_of_each_slot(compiled):
    props = verify_passport(compiled.model)
    component = holder()
    assert props[FINGERPRINT + "state"] == component.fingerprint
    assert props[PARTS + "state"] == canonical_json(
        dict(component.fingerprint_parts))
    bindings = {k: v for k, v in props.items() if k.startswith(BINDING)}
    assert len(bindings) == 2 and set(bindings.values()) == {"protocol|holder"}


@pytest.mark.parametrize("prefix, value", [
    (BINDING, "protocol|other_holder"),
    (FINGERPRINT, "0" * 64),
    (PARTS, '{"config":"0","methods":"0","name":"0","role":"0","state":"0"}'),
])
def test_an_edited_binding_entry_fails_verify_load_and_install(compiled, tmp_path, prefix,
                                                               value):
    edited = _edited(compiled, prefix, value)
    with pytest.raises(PassportError, match="altered after compilation"):
        verify_passport(edited.model)
    edited.save(tmp_path / "edited.onnx")
    with pytest.raises(PassportError, match="altered after compilation"):
        bbjax.load(tmp_path / "edited.onnx")
    with pytest.raises(PassportError, match="altered after compilation"):
        _install_node(edited, holder())


def test_added_and_removed_binding_entries_fail_verification(compiled):
    props = _props(compiled.model)
    added = _with_props(compiled, {**props, BINDING + "relay_node#0.extra": "protocol|x"})
    with pytest.raises(PassportError, match="names no partition"):
        verify_passport(added.model)
    removed = {k: v for k, v in props.items() if k != FINGERPRINT + "state"}
    with pytest.raises(PassportError, match="has no entries .*fingerprint.state"):
        verify_passport(_with_props(compiled, removed).model)


def test_a_rehashed_passport_binding_a_slot_to_two_components_is_refused(compiled):
    props = _props(compiled.model)
    key = next(k for k in props if k.startswith(BINDING + "relay_node"))
    props[key] = "protocol|other_holder"
    with pytest.raises(PassportError, match="slot 'state' is bound to") as info:
        verify_passport(_rehashed(compiled, props).model)
    assert "'protocol|holder'" in str(info.value) and "'protocol|other_holder'" in str(info.value)


def test_rehashed_parts_that_are_not_the_fingerprints_digest_are_refused(compiled):
    props = _props(compiled.model)
    props[PARTS + "state"] = props[PARTS + "state"].replace('"config":"', '"config":"0')
    with pytest.raises(PassportError, match="does not hash to fingerprint"):
        verify_passport(_rehashed(compiled, props).model)


DIFFERENT = {
    "state shape": (holder(size=4), "state"),
    "role": (Component(Role.MODEL, lambda key: {"v": jnp.zeros(3)},
                       {"forward": lambda s, x: (s, x), "params": lambda s: (s, s["v"]),
                        "load_parameters": lambda s, p: ({"v": p}, ())}, "holder",
                       {"lr": 0.1, "batch_size": 8}), "role, methods"),
    "config": (holder(config={"lr": 0.2, "batch_size": 8}), "config"),
}


@pytest.mark.parametrize("what", sorted(DIFFERENT))
def test_install_refuses_a_different_component_of_the_same_name(compiled, what):
    component, parts = DIFFERENT[what]
    assert component.name == "holder"
    message = (f"slot 'state' was compiled with a component of fingerprint "
               f"{holder().fingerprint}; install was given 'holder' \\({component.role.value}\\) "
               f"of fingerprint {component.fingerprint}, which differs in: {parts}$")
    with pytest.raises(PassportError, match=message):
        _install_node(compiled, component)


@pytest.mark.parametrize("what", sorted(DIFFERENT))
def test_simulate_refuses_a_different_component_of_the_same_name(compiled, what):
    component, parts = DIFFERENT[what]
    message = (f"slot 'state' was compiled with a component of fingerprint "
               f"{holder().fingerprint}; simulate was given 'holder' "
               f"\\({component.role.value}\\) of fingerprint {component.fingerprint}, "
               f"which differs in: {parts}$")
    with pytest.raises(PassportError, match=message):
        simulate(compiled, POPULATION, 1, jax.random.PRNGKey(0), bindings={"state": component})


def test_the_compiled_component_built_afresh_is_accepted(compiled):
    fresh = holder()
    node = install(0, compiled, ["relay"], {"state": fresh},
                   NodeConfig(peers={"node": [1, 2, 3]}))
    assert sorted(node.states) == ["state"]
    _install_node(compiled, fresh)
    sim = Simulation(compiled, POPULATION, {"state": fresh})
    states, _ = sim.round(sim.init(jax.random.PRNGKey(0)), jax.random.PRNGKey(1))
    assert states["node"]["state"]["v"].shape == (3, 3)


def test_a_missing_component_is_still_named(compiled):
    with pytest.raises(InstallError, match=re.escape("'state' needs a component (protocol|holder)")):
        install(1, compiled, ["relay_node"], {})
    with pytest.raises(SimulationError, match=r"unbound slots \['state'\]"):
        Simulation(compiled, POPULATION, {})


def test_the_fingerprint_is_the_same_in_another_process():
    code = ("from tests.compiler.test_passport_bindings import holder; "
            "c = holder(config={'b': [1, 2], 'a': {'y': 1.5, 'x': None}}); "
            "print(c.fingerprint, dict(c.fingerprint_parts))")
    runs = [subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed})
            for seed in ("1", "2")]
    here = holder(config={"a": {"x": None, "y": 1.5}, "b": [1, 2]})
    assert [r.stdout.split()[0] for r in runs] == [here.fingerprint] * 2


def test_factories_record_their_hyperparameters_so_a_retuned_component_is_refused():
    import numpy as np

    from bbjax.components import padded_data_source, weighted_mean

    x, y = np.zeros((8, 2), np.float32), np.zeros(8, np.int32)
    assert padded_data_source(x, y, 8, batch_size=4).config == {"batch_size": 4}
    assert (padded_data_source(x, y, 8, batch_size=4).fingerprint
            != padded_data_source(x, y, 8, batch_size=2).fingerprint)
    assert (weighted_mean(4, {"w": jnp.zeros(2)}).fingerprint
            != weighted_mean(4, {"w": jnp.zeros(2)}, max_weight=100.0).fingerprint)
    compiled_with = padded_data_source(x, y, 8, batch_size=4)
    retuned = padded_data_source(x, y, 8, batch_size=2)
    compiled = bbjax.Compiler().bind("data", compiled_with).compile(_DataOnly())
    install(0, compiled, ["data_only"], {"data": compiled_with})
    with pytest.raises(PassportError, match="slot 'data'.*differs in: config$"):
        install(0, compiled, ["data_only"], {"data": retuned})


class _DataOnly(Module):
    name = "data_only"

    def body(self, g: Graph) -> None:
        x, y = g.slot("data").next_batch()
        g.output("x", x)
