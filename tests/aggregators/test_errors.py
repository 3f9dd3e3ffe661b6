"""Invalid hyperparameters fail at construction, invalid cohorts at trace time, always with
:class:`AggregatorError`."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import bbjax.aggregators as agg
from bbjax.aggregators import EmptyState
from bbjax.errors import AggregatorError
from bbjax.errors import BbjaxError
from .common import cohort


def test_error_type():
    assert issubclass(AggregatorError, BbjaxError)


@pytest.mark.parametrize("make, match", [
    (lambda: agg.fedavgm(server_learning_rate=0.0), "server_learning_rate"),
    (lambda: agg.fedavgm(server_momentum=-0.1), "server_momentum"),
    (lambda: agg.fedadagrad(eta=0.0), "eta"),
    (lambda: agg.fedadagrad(tau=0.0), "tau"),
    (lambda: agg.fedadam(beta_1=1.0), "beta_1"),
    (lambda: agg.fedadam(beta_2=-0.5), "beta_2"),
    (lambda: agg.fedyogi(eta_l=-1.0), "eta_l"),
    (lambda: agg.qfedavg(q=-1.0), "q"),
    (lambda: agg.qfedavg(learning_rate=0.0), "learning_rate"),
    (lambda: agg.trimmed_mean(0.5), "proportion"),
    (lambda: agg.trimmed_mean(-0.1), "proportion"),
    (lambda: agg.krum(num_malicious=-1), "num_malicious"),
    (lambda: agg.krum(num_malicious=1.5), "num_malicious"),
    (lambda: agg.krum(num_to_keep=-2), "num_to_keep"),
    (lambda: agg.bulyan(num_malicious=True), "num_malicious"),
    (lambda: agg.scaffold(server_learning_rate=-1.0), "server_learning_rate"),
    (lambda: agg.scaffold(num_clients=0), "num_clients"),
    (lambda: agg.fedprox(lambda p: 0.0, proximal_mu=-0.1), "proximal_mu"),
])
def test_bad_hyperparameters(make, match):
    with pytest.raises(AggregatorError, match=match):
        make()


@pytest.mark.parametrize("make", [agg.fedavg, agg.fedavgm, agg.fedadagrad, agg.fedadam,
                                  agg.fedyogi, agg.qfedavg, agg.median, agg.trimmed_mean,
                                  agg.krum, agg.bulyan, agg.scaffold])
@pytest.mark.parametrize("max_weight", [0, -1.0, float("nan"), float("inf"), True, "100"])
def test_bad_max_weight(make, max_weight):
    with pytest.raises(AggregatorError, match=r"max_weight must be a finite number > 0"):
        make(max_weight=max_weight)


def _trace(rule, g, c, w, mask=None, **kw):
    return jax.jit(rule.aggregate).trace(rule.init(g), g, c, w, mask, **kw)


@pytest.mark.parametrize("rule, n, match", [
    (agg.bulyan(num_malicious=2), 10, r"at least 4\*2\+3 = 11 clients, got 10"),
    (agg.krum(num_malicious=3), 8, r"at least 2\*3\+3 = 9 clients, got 8"),
    (agg.krum(num_to_keep=6), 5, "num_to_keep=6 exceeds the cohort of 5"),
])
def test_cohort_too_small(rule, n, match):
    g, c, w = cohort(0, "dense", n)
    with pytest.raises(AggregatorError, match=match):
        _trace(rule, g, c, w)


def test_bulyan_smallest_cohort_traces():
    g, c, w = cohort(0, "dense", 11)
    _trace(agg.bulyan(num_malicious=2), g, c, w)


@pytest.mark.parametrize("change, match", [
    (lambda g, c, w, m: (g, {"w": c["w"]}, w, m), "tree structure"),
    (lambda g, c, w, m: (g, {**c, "b": c["b"][:, :3]}, w, m), r"\['b'\] has shape \(5, 3\)"),
    (lambda g, c, w, m: (g, {**c, "b": c["b"][:4]}, w, m), r"\['w'\] stacks 5 clients|stacks 4"),
    (lambda g, c, w, m: (g, {**c, "b": c["b"].astype(np.int32)}, w, m), "dtype int32"),
    (lambda g, c, w, m: (g, c, w[:4], m), r"weights has shape \(4,\), expected \(5,\)"),
    (lambda g, c, w, m: (g, c, w, m[None]), r"mask has shape \(1, 5\)"),
    (lambda g, c, w, m: (g, jax.tree.map(lambda x: x[:0], c), w[:0], m[:0]), "empty"),
])
def test_bad_cohort_shapes(change, match):
    g, c, w = cohort(0, "dense", 5)
    g, c, w, m = change(g, c, w, np.ones(5, bool))
    with pytest.raises(AggregatorError, match=match):
        _trace(agg.fedavg(), g, c, w, m)


def test_bad_extras():
    g, c, w = cohort(0, "dense", 5)
    with pytest.raises(AggregatorError, match=r"losses has shape \(4,\)"):
        _trace(agg.qfedavg(), g, c, w, losses=np.ones(4, np.float32))
    with pytest.raises(AggregatorError, match="control_deltas"):
        _trace(agg.scaffold(), g, c, w, control_deltas={"w": c["w"]})


def test_state_is_the_rules_own():
    g, _, _ = cohort(0, "dense", 5)
    assert agg.median().init(g) == EmptyState()
    assert int(agg.fedadam().init(g).count) == 0
