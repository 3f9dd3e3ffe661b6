"""The same ``Stages`` train alike under :class:`ModelParallelRound` (simulate) and under
``bbjax.strategies.pipeline``'s SPMD program on one device: the interface the two share."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bbjax.models import cross_entropy
from bbjax.strategies.pipeline import pipeline
from tests.strategies.model_parallel.reference import batches
from tests.strategies.model_parallel.test_training import (
    BATCH,
    STEPS,
    mlp_case,
    simulated,
    stage_params,
)


@pytest.mark.slow  # by default docs/strategies.md runs split's stages under the pipeline
def test_split_stages_run_under_the_spmd_pipeline_with_the_same_update():
    _, stages, x, y = mlp_case(0)
    history = simulated("mlp", "adam", 2)[-1]
    pipe = pipeline(stages, cross_entropy, optax.adam(0.01), batch=(x[:BATCH], y[:BATCH]),
                    micro_batches=2)
    state, losses = pipe.init(), []
    for xb, yb in batches(x, y, BATCH, STEPS):
        state, loss = pipe.step(state, jnp.asarray(xb), jnp.asarray(yb))
        losses.append(float(loss))
    np.testing.assert_allclose(losses, history["train_loss"], rtol=1e-5)
    for s, got in enumerate(pipe.params(state)):
        want = stage_params(history, s)
        assert jax.tree.structure(got) == jax.tree.structure(want)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=1e-5,
                                                             atol=1e-6), got, want)
