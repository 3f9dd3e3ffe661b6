"""The client halves: the FedProx objective and SCAFFOLD's corrected gradient and control
update, against numpy; and SCAFFOLD removing client drift on a toy problem."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

import bbjax.aggregators as agg
from .common import TOL, cohort


def test_fedprox_value_and_gradient():
    g, c, _ = cohort(50, "mixed", 1)
    params = jax.tree.map(lambda x: x[0], c)
    mu = 0.3

    def loss(p, scale):
        return scale * sum(jnp.sum(jnp.sin(x)) for x in jax.tree.leaves(p))

    prox = agg.fedprox(loss, proximal_mu=mu)
    value, grad = jax.jit(jax.value_and_grad(prox))(params, g, 2.0)
    p64 = [np.float64(x) for x in jax.tree.leaves(params)]
    g64 = [np.float64(x) for x in jax.tree.leaves(g)]
    expected = 2.0 * sum(np.sin(p).sum() for p in p64) + mu / 2 * sum(
        ((p - q) ** 2).sum() for p, q in zip(p64, g64))
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    expected_grad = [2.0 * np.cos(p) + mu * (p - q) for p, q in zip(p64, g64)]
    chex.assert_trees_all_close(jax.tree.leaves(grad), expected_grad, **TOL)


def test_fedprox_mu_zero_is_the_loss():
    g, c, _ = cohort(51, "dense", 1)
    params = jax.tree.map(lambda x: x[0], c)
    loss = lambda p: jnp.sum(p["w"] ** 2)
    assert agg.fedprox(loss, 0.0)(params, g) == loss(params)


def test_scaffold_client_formulas():
    r = np.random.default_rng(52)
    trees = [{"a": r.normal(size=(3, 2)).astype(np.float32), "b": r.normal(size=(4,))
              .astype(np.float32)} for _ in range(5)]
    grads, ci, c, x, y = trees
    chex.assert_trees_all_close(agg.scaffold_gradient(grads, ci, c),
                                jax.tree.map(lambda a, b, d: np.float64(a) - b + d, grads, ci, c),
                                **TOL)
    new, delta = agg.scaffold_control_update(ci, c, x, y, num_steps=5, learning_rate=0.1)
    expected = jax.tree.map(lambda a, b, p, q: np.float64(a) - b + (np.float64(p) - q) / 0.5,
                            ci, c, x, y)
    chex.assert_trees_all_close(new, expected, **TOL)
    chex.assert_trees_all_close(delta, jax.tree.map(lambda e, a: e - a, expected, ci), **TOL)


def _train(rule_name, rounds=60, steps=10, lr=0.05):
    """Two clients with quadratics 0.5 * a_i * (w - b_i)^2; returns the final global w.

    The global optimum is sum(a b) / sum(a). FedAvg with several local steps drifts to a
    different point; SCAFFOLD's correction removes the drift.
    """
    a = jnp.array([1.0, 8.0])
    b = jnp.array([[3.0], [-1.0]])
    rule = agg.scaffold() if rule_name == "scaffold" else agg.fedavg()
    w = {"w": jnp.zeros((1,))}
    state = rule.init(w)
    controls = {"w": jnp.zeros((2, 1))}

    def local(w0, ci, c, ai, bi):
        def step(p, _):
            g = {"w": ai * (p["w"] - bi)}
            if rule_name == "scaffold":
                g = agg.scaffold_gradient(g, ci, c)
            return jax.tree.map(lambda p, g: p - lr * g, p, g), None
        y = jax.lax.scan(step, w0, None, length=steps)[0]
        return (y, *agg.scaffold_control_update(ci, c, w0, y, steps, lr))

    @jax.jit
    def round_(w, state, controls):
        c = state.control if rule_name == "scaffold" else {"w": jnp.zeros((1,))}
        y, new_controls, deltas = jax.vmap(local, in_axes=(None, 0, None, 0, 0))(
            w, controls, c, a, b)
        kw = {"control_deltas": deltas} if rule_name == "scaffold" else {}
        w, state = rule.aggregate(state, w, y, jnp.ones(2), **kw)
        return w, state, new_controls

    for _ in range(rounds):
        w, state, controls = round_(w, state, controls)
    return float(w["w"][0])


def test_scaffold_removes_client_drift():
    optimum = (1.0 * 3.0 + 8.0 * -1.0) / 9.0
    assert abs(_train("fedavg") - optimum) > 0.1
    assert abs(_train("scaffold") - optimum) < 1e-4
