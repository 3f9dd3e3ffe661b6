"""The pipeline on one device (the stage axis vmapped) gives the non-pipelined update, and
bad inputs raise a specific bbjax error when the pipeline is built. The same program on
P devices: test_multi_device.py."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from bbjax.errors import DataError, InvalidArgument, StageError
from bbjax.strategies.pipeline import pipeline
from tests.strategies.pipeline import stage_models as models


def fresh_seed() -> int:
    return int(np.random.default_rng().integers(1 << 30))


def test_one_device_equals_the_non_pipelined_step():
    seed, optimizer = fresh_seed(), optax.adam(0.05)
    stages = models.mlp(3, seed)
    x, y = models.data("mlp", 8, seed + 1)
    pipe = pipeline(stages, models.loss, optimizer, batch=(x, y), micro_batches=4)
    state, losses = pipe.init(), []
    for _ in range(3):
        state, loss = pipe.step(state, x, y)
        losses.append(float(loss))
    expected, expected_losses = models.reference(stages, optimizer, x, y, 3)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5, err_msg=f"seed {seed}")
    got = pipe.params(state)
    assert jax.tree.structure(got) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"seed {seed}")
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                zip(jax.tree.leaves(got), jax.tree.leaves(stages.params)))
    assert moved > 1e-3  # the step really trained


def build(stages=None, batch=None, **kwargs):
    stages = stages or models.mlp(3, 0)
    kwargs.setdefault("micro_batches", 2)
    batch = models.data("mlp", 8, 0) if batch is None else batch
    return pipeline(stages, models.loss, optax.sgd(0.1), batch=batch, **kwargs)


@pytest.mark.parametrize("devices", [1, 2, 4, [jax.devices()[0]] * 3])
def test_devices_must_be_one_per_stage(devices):
    with pytest.raises(InvalidArgument, match="3 stages need 3"):
        build(devices=devices)


def test_mesh_needs_the_stage_axis():
    with pytest.raises(InvalidArgument, match="'stage'"):
        build(models.mlp(1, 0), devices=Mesh(np.array(jax.devices()[:1]), ("peer",)))


@pytest.mark.parametrize("micro_batches", [0, -2, 1.5])
def test_micro_batches_at_least_one(micro_batches):
    with pytest.raises(InvalidArgument, match="micro_batches"):
        build(micro_batches=micro_batches)


def test_batch_must_split_into_micro_batches():
    with pytest.raises(DataError, match="10 rows do not split into micro_batches=4"):
        build(batch=models.data("mlp", 10, 0), micro_batches=4)
    x, y = models.data("mlp", 8, 0)
    with pytest.raises(DataError, match="same number of rows"):
        build(batch=(x, y[:6]))


def test_stage_output_must_fit_the_next_stage():
    stages = models.mlp(3, 0)
    wrong = dict(stages.params[1], w=np.zeros((4, 6), np.float32))  # takes 4 features, not 6
    with pytest.raises(StageError, match="stage 1 cannot take stage 0's output float32\\[4, 6\\]"
                       ) as error:
        build(SimpleNamespace(applies=stages.applies,
                              params=(stages.params[0], wrong, stages.params[2])))
    assert error.value.stage == 1


def test_stage_outputs_must_be_floating_arrays_and_the_loss_a_scalar():
    stages = models.mlp(2, 0)
    as_int = (lambda p, x: models.hidden(p, x).astype(jnp.int32), stages.applies[1])
    with pytest.raises(StageError, match="stage 0's output int32.* not floating"):
        build(SimpleNamespace(applies=as_int, params=stages.params))
    pair = (lambda p, x: (x, x), stages.applies[1])
    with pytest.raises(StageError, match="stage 0 must return one array"):
        build(SimpleNamespace(applies=pair, params=stages.params))
    with pytest.raises(StageError, match="loss of stage 1's output must be a floating scalar"):
        pipeline(stages, lambda out, y: out, optax.sgd(0.1), batch=models.data("mlp", 8, 0),
                 micro_batches=2)


def test_parameters_must_be_floating_and_the_batch_a_pair():
    stages = models.mlp(2, 0)
    counted = (dict(stages.params[0], steps=np.int32(0)), stages.params[1])
    with pytest.raises(StageError, match=r"stage 0's parameter \['steps'\] is int32") as error:
        build(SimpleNamespace(applies=stages.applies, params=counted))
    assert error.value.stage == 0
    with pytest.raises(DataError, match="batch must be a pair"):
        build(stages, batch=models.data("mlp", 8, 0)[0])


def test_bad_stages_schedule_and_optimizer():
    stages = models.mlp(2, 0)
    with pytest.raises(InvalidArgument, match="without .params"):
        build(SimpleNamespace(applies=stages.applies))
    with pytest.raises(InvalidArgument, match="one params pytree per apply"):
        build(SimpleNamespace(applies=stages.applies, params=stages.params[:1]))
    with pytest.raises(InvalidArgument, match="schedule must be one of"):
        build(stages, schedule="interleaved")
    with pytest.raises(InvalidArgument, match="optax GradientTransformation"):
        pipeline(stages, models.loss, "sgd", batch=models.data("mlp", 8, 0), micro_batches=2)


def test_step_refuses_another_batch_shape():
    pipe = build(models.mlp(2, 0))
    x, y = models.data("mlp", 4, 0)
    with pytest.raises(DataError, match=r"x has shape \(4, 5\).*built for \(8, 5\)"):
        pipe.step(pipe.init(), x, y)
