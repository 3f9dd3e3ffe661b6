"""A pipeline-parallel training step: ``P`` stages on ``P`` devices in one compiled program.

:func:`pipeline` takes stages (any object with ``applies``, one pure ``apply(params, x) ->
y`` per stage, and ``params``, their initial pytrees, e.g.
``bbjax.strategies.model_parallel.stages.Stages``), a loss ``loss(y_pred, labels) ->
scalar mean`` on the last stage's output and an optax optimizer. A step splits the batch
into ``M`` equal micro-batches and runs a :mod:`~bbjax.strategies.pipeline.schedule` tick
by tick in one ``lax.scan`` inside ``jax.shard_map`` over a 1-D mesh axis ``"stage"``:

- Device ``s`` holds stage ``s``'s parameters and optimizer state, each packed into one
  padded row per dtype (:mod:`~bbjax.strategies.pipeline.packing`); ``lax.switch`` on
  ``axis_index("stage")`` runs its own stage's forward or backward, so stages may have
  any parameter shapes (a CNN's convolutions, a dense head).
- Every tick every stage computes: an idle stage (the bubble) computes on a dummy
  micro-batch whose results are masked out. Between ticks ``lax.ppermute`` moves the
  activations to the next stage and the cotangents to the previous one, flattened and
  padded to the widest stage boundary.
- A stage keeps the input activation of each micro-batch in flight (``schedule.slots``
  of them) and its backward recomputes its forward under ``jax.vjp`` (rematerialization,
  as in GPipe), so no residuals of the stage's inner layers are kept between ticks.
- The gradients of the micro-batches accumulate (each weighted ``1/M``, so they are the
  gradient of the mean loss over the whole batch), then each stage applies the optimizer
  to its own parameter tree on its own device.

The update is the non-pipelined one: the gradient of the composed model's mean loss over
the whole batch, with the optimizer applied stage by stage (the same update for
element-wise optimizers, SGD, momentum, Adam; a transform that couples leaves, such as
``clip_by_global_norm``, sees one stage's tree).

``devices=None`` runs the same program on one device, the stage axis ``vmap``-ed instead
of sharded (``ppermute`` becomes a shift of the stacked stages). The schedule and the
numbers are the same, but ``lax.switch`` under ``vmap`` computes every branch for every
stage, ``2P`` times the work of a tick: a check of the program, not a way to make it fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as Spec

from bbjax._checks import check_count
from bbjax.errors import DataError, InvalidArgument, StageError
from bbjax.strategies.pipeline.packing import Packing, Rows, packing
from bbjax.strategies.pipeline.schedule import FORWARD, Schedule, gpipe, one_f_one_b

PyTree = Any
AXIS = "stage"
SCHEDULES = {"gpipe": gpipe, "1f1b": one_f_one_b}


@struct.dataclass
class PipelineState:
    """Every stage's parameters and optimizer state, packed: ``{dtype: [P, width]}``, row
    ``s`` on stage ``s``'s device."""

    params: Rows
    opt_state: Rows


class Pipeline:
    """A built pipeline: :meth:`init`, the jitted :attr:`step` and :meth:`params`.

    ``schedule`` is the :class:`Schedule` it runs, ``mesh`` its 1-D ``"stage"`` mesh
    (``None`` on one device) and ``boundaries`` the shape of each stage's output for one
    micro-batch.
    """

    def __init__(self, stages: Any, loss: Callable, optimizer: optax.GradientTransformation,
                 batch: tuple[Any, Any], micro_batches: int, schedule: str, mesh: Mesh | None):
        self.applies = tuple(stages.applies)
        self.loss = loss
        self.optimizer = optimizer
        self.mesh = mesh
        p = len(self.applies)
        self.micro_batches = m = check_count("micro_batches", micro_batches)
        self.schedule: Schedule = SCHEDULES[schedule](p, m)
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2
                and all(hasattr(v, "shape") and hasattr(v, "dtype") for v in batch)):
            raise DataError(f"batch must be a pair (x, y) of arrays or jax.ShapeDtypeStruct, "
                            f"got {type(batch).__name__}")
        x, y = batch
        self.x = jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)
        self.y = jax.ShapeDtypeStruct(tuple(y.shape), y.dtype)
        if not self.x.shape or not self.y.shape or self.x.shape[0] != self.y.shape[0]:
            raise DataError(f"batch: x and y need the same number of rows, got shapes "
                            f"{self.x.shape} and {self.y.shape}")
        if self.x.shape[0] % m:
            raise DataError(f"batch: {self.x.shape[0]} rows do not split into micro_batches="
                            f"{m} equal micro-batches")
        initial = [jax.tree.map(jnp.asarray, params) for params in stages.params]
        for s, params in enumerate(initial):
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
                if not jnp.issubdtype(leaf.dtype, jnp.floating):
                    raise StageError(f"stage {s}'s parameter {jax.tree_util.keystr(path)} is "
                                     f"{leaf.dtype}, not floating: it cannot be trained",
                                     stage=s)
        self.param_packing: Packing = packing(initial)
        self.opt_packing: Packing = packing([optimizer.init(p) for p in initial])
        self._initial = initial
        self.boundaries = self._chain()
        width = max([1] + [int(np.prod(b.shape)) for b in self.boundaries[:-1]])
        dtype = jnp.result_type(*[b.dtype for b in self.boundaries[:-1]]) if p > 1 else "float32"
        self.activation = jax.ShapeDtypeStruct((width,), dtype)
        self.step = jax.jit(self._step)

    # -- building ---------------------------------------------------------------------

    def _chain(self) -> tuple[jax.ShapeDtypeStruct, ...]:
        """Each stage's output for one micro-batch, checked to feed the next stage and the
        loss (``StageError`` naming the stage)."""
        rows = self.x.shape[0] // self.micro_batches
        value = jax.ShapeDtypeStruct((rows, *self.x.shape[1:]), self.x.dtype)
        label = jax.ShapeDtypeStruct((rows, *self.y.shape[1:]), self.y.dtype)
        outs = []
        for s, (apply, params) in enumerate(zip(self.applies, self._initial)):
            try:
                value = jax.eval_shape(apply, params, value)
            except Exception as error:  # the user's apply refused its input
                source = "the micro-batch" if s == 0 else f"stage {s - 1}'s output"
                raise StageError(f"stage {s} cannot take {source} {_describe(value)}: "
                                 f"{type(error).__name__}: {error}", stage=s) from error
            if not isinstance(value, jax.ShapeDtypeStruct):
                raise StageError(f"stage {s} must return one array, got "
                                 f"{jax.tree.structure(value)}", stage=s)
            if s < len(self.applies) - 1 and not jnp.issubdtype(value.dtype, jnp.floating):
                raise StageError(f"stage {s}'s output {_describe(value)} is not floating, so "
                                 "no gradient can flow back through it", stage=s)
            outs.append(value)
        s = len(self.applies) - 1
        try:
            loss = jax.eval_shape(self.loss, value, label)
        except Exception as error:
            raise StageError(f"the loss cannot take stage {s}'s output {_describe(value)} and "
                             f"labels {_describe(label)}: {type(error).__name__}: {error}",
                             stage=s) from error
        if not (isinstance(loss, jax.ShapeDtypeStruct) and loss.shape == ()
                and jnp.issubdtype(loss.dtype, jnp.floating)):
            raise StageError(f"the loss of stage {s}'s output must be a floating scalar, got "
                             f"{loss}", stage=s)
        return tuple(outs)

    def _flat(self, value: jax.Array) -> jax.Array:
        flat = value.reshape(-1).astype(self.activation.dtype)
        return jnp.pad(flat, (0, self.activation.shape[0] - flat.shape[0]))

    def _unflat(self, flat: jax.Array, like: jax.ShapeDtypeStruct) -> jax.Array:
        return flat[:int(np.prod(like.shape))].reshape(like.shape).astype(like.dtype)

    def _branches(self) -> list[Callable]:
        """Stage ``s``'s forward (branch ``2s``) and backward (``2s + 1``), each
        ``(params, x, y, act, cot) -> (to next, to previous, gradient rows, loss)``."""
        p, m = len(self.applies), self.micro_batches
        zero_act = jnp.zeros(self.activation.shape, self.activation.dtype)
        zero_grads = {name: jnp.zeros((width,), name)
                      for name, width in self.param_packing.widths.items()}
        branches = []
        for s, apply in enumerate(self.applies):
            last = s == p - 1
            source = self.boundaries[s - 1] if s > 0 else None

            def forward(rows, x, y, act, cot, s=s, apply=apply, last=last, source=source):
                inputs = x if source is None else self._unflat(act, source)
                out = apply(self.param_packing.unpack(s, rows), inputs)
                if last:
                    return zero_act, zero_act, zero_grads, self.loss(out, y).astype(jnp.float32)
                return self._flat(out), zero_act, zero_grads, jnp.float32(0)

            def backward(rows, x, y, act, cot, s=s, apply=apply, last=last, source=source):
                def objective(params, flat_in):
                    inputs = x if source is None else self._unflat(flat_in, source)
                    out = apply(params, inputs)
                    return self.loss(out, y) / m if last else self._flat(out)

                params = self.param_packing.unpack(s, rows)
                out, vjp = jax.vjp(objective, params, act)
                grads, back = vjp(jnp.ones_like(out) if last else cot)
                back = zero_act if source is None else back
                return zero_act, back, self.param_packing.pack(s, grads), jnp.float32(0)

            branches += [forward, backward]
        return branches

    # -- one stage's program ------------------------------------------------------------

    def _lane(self, params: Rows, opt_state: Rows, xs: jax.Array, ys: jax.Array):
        """Stage ``axis_index("stage")``'s whole step on its own rows."""
        schedule, p = self.schedule, len(self.applies)
        k, width = schedule.slots, self.activation.shape[0]
        ops, mbs = jnp.asarray(schedule.op), jnp.asarray(schedule.micro_batch)
        s = lax.axis_index(AXIS)
        previous, following = (s - 1) % p, (s + 1) % p
        branches = self._branches()

        def tick(carry, t):
            acts, cots, grads, loss = carry
            j = mbs[t, s]
            valid = j >= 0
            jc = jnp.maximum(j, 0)
            slot = jc % k
            to_next, to_previous, g, value = lax.switch(
                2 * s + ops[t, s], branches, params, xs[jc], ys[jc], acts[slot], cots[slot])
            grads = jax.tree.map(lambda a, b: a + jnp.where(valid, b, 0), grads, g)
            loss = loss + jnp.where(valid, value, 0)
            arrived = lax.ppermute(to_next, AXIS, [(i, (i + 1) % p) for i in range(p)])
            returned = lax.ppermute(to_previous, AXIS, [(i, (i - 1) % p) for i in range(p)])
            acts = _store(acts, arrived, mbs[t, previous], k,
                          (s > 0) & (ops[t, previous] == FORWARD))
            cots = _store(cots, returned, mbs[t, following], k,
                          (s < p - 1) & (ops[t, following] != FORWARD))
            return (acts, cots, grads, loss), None

        buffers = jnp.zeros((k, width), self.activation.dtype)
        grads = jax.tree.map(jnp.zeros_like, params)
        (_, _, grads, loss), _ = lax.scan(tick, (buffers, buffers, grads, jnp.float32(0)),
                                          jnp.arange(schedule.ticks))
        params, opt_state = lax.switch(s, [self._update(i) for i in range(p)],
                                       params, grads, opt_state)
        return params, opt_state, lax.psum(loss, AXIS) / self.micro_batches

    def _update(self, s: int) -> Callable:
        def update(rows, grad_rows, opt_rows):
            params = self.param_packing.unpack(s, rows)
            grads = self.param_packing.unpack(s, grad_rows)
            opt_state = self.opt_packing.unpack(s, opt_rows)
            updates, opt_state = self.optimizer.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            return self.param_packing.pack(s, params), self.opt_packing.pack(s, opt_state)
        return update

    # -- the public face ----------------------------------------------------------------

    def init(self) -> PipelineState:
        """The initial state: every stage's parameters and ``optimizer.init`` of them,
        row ``s`` placed on stage ``s``'s device."""
        state = PipelineState(
            self.param_packing.stack(self._initial),
            self.opt_packing.stack([self.optimizer.init(p) for p in self._initial]))
        if self.mesh is None:
            return state
        return jax.device_put(state, NamedSharding(self.mesh, Spec(AXIS)))

    def _step(self, state: PipelineState, x: jax.Array, y: jax.Array
              ) -> tuple[PipelineState, jax.Array]:
        for name, value, like in (("x", x, self.x), ("y", y, self.y)):
            if (tuple(value.shape), value.dtype) != (like.shape, like.dtype):
                raise DataError(f"step: {name} has shape {tuple(value.shape)} and dtype "
                                f"{value.dtype}; this pipeline was built for {like.shape} "
                                f"{like.dtype}")
        m = self.micro_batches
        xs = x.reshape(m, x.shape[0] // m, *x.shape[1:])
        ys = y.reshape(m, y.shape[0] // m, *y.shape[1:])
        if self.mesh is None:
            params, opt_state, loss = jax.vmap(
                self._lane, in_axes=(0, 0, None, None), axis_name=AXIS,
                axis_size=len(self.applies))(state.params, state.opt_state, xs, ys)
            return PipelineState(params, opt_state), loss[0]

        def spmd(params, opt_state, xs, ys):
            params, opt_state, loss = self._lane(_first(params), _first(opt_state), xs, ys)
            return (jax.tree.map(lambda a: a[None], params),
                    jax.tree.map(lambda a: a[None], opt_state), loss)

        params, opt_state, loss = jax.shard_map(
            spmd, mesh=self.mesh, in_specs=(Spec(AXIS), Spec(AXIS), Spec(), Spec()),
            out_specs=(Spec(AXIS), Spec(AXIS), Spec()),
            check_vma=False)(state.params, state.opt_state, xs, ys)
        return PipelineState(params, opt_state), loss

    def params(self, state: PipelineState) -> tuple[PyTree, ...]:
        """Every stage's parameter pytree, read back from ``state``."""
        return tuple(self.param_packing.unpack(s, {name: rows[s] for name, rows
                                                   in state.params.items()})
                     for s in range(len(self.applies)))


def pipeline(stages: Any, loss: Callable[[jax.Array, jax.Array], jax.Array],
             optimizer: optax.GradientTransformation, *, batch: tuple[Any, Any],
             micro_batches: int, schedule: str = "gpipe",
             devices: int | Sequence[jax.Device] | Mesh | None = None) -> Pipeline:
    """A pipeline training ``stages`` (``.applies`` and ``.params``) with ``loss`` on the
    last stage's output and ``optimizer``, for batches shaped like ``batch = (x, y)``
    (arrays or ``jax.ShapeDtypeStruct``) split into ``micro_batches``.

    ``schedule`` is ``"gpipe"`` or ``"1f1b"``. ``devices``: ``None`` (every stage on the
    default device, the stage axis vmapped), a number of devices, a sequence of devices
    or a 1-D ``Mesh`` with axis ``"stage"``, one device per stage.
    """
    for field in ("applies", "params"):
        if not hasattr(stages, field):
            raise InvalidArgument(f"stages needs .applies and .params, got {type(stages)!r} "
                                  f"without .{field}")
    p = len(stages.applies)
    if p < 1 or len(stages.params) != p:
        raise InvalidArgument(f"stages needs one params pytree per apply (at least one), got "
                              f"{p} applies and {len(stages.params)} params")
    for s, apply in enumerate(stages.applies):
        if not callable(apply):
            raise InvalidArgument(f"stage {s}'s apply is not callable: {apply!r}")
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise InvalidArgument(f"optimizer must be an optax GradientTransformation, got "
                              f"{optimizer!r}")
    if schedule not in SCHEDULES:
        raise InvalidArgument(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
    return Pipeline(stages, loss, optimizer, batch, micro_batches, schedule,
                    _mesh(devices, p))


def _mesh(devices: int | Sequence[jax.Device] | Mesh | None, stages: int) -> Mesh | None:
    if devices is None:
        return None
    if isinstance(devices, Mesh):
        if devices.axis_names != (AXIS,) or devices.devices.size != stages:
            raise InvalidArgument(f"devices: the mesh must have the one axis {AXIS!r} of "
                                  f"{stages} devices (one per stage), got axes "
                                  f"{dict(devices.shape)}")
        return devices
    if isinstance(devices, (int, np.integer)) and not isinstance(devices, bool):
        available = jax.devices()
        if devices != stages or devices > len(available):
            raise InvalidArgument(f"devices={devices}: {stages} stages need {stages} devices, "
                                  f"one each ({len(available)} available; devices=None puts "
                                  "every stage on one device)")
        devices = available[:devices]
    devices = list(devices)
    if len(devices) != stages or len(set(devices)) != stages:
        raise InvalidArgument(f"devices: {stages} stages need {stages} distinct devices, one "
                              f"each, got {len(devices)} ({len(set(devices))} distinct)")
    return Mesh(np.array(devices), (AXIS,))


def _store(buffer: jax.Array, value: jax.Array, micro_batch: jax.Array, slots: int,
           take: jax.Array) -> jax.Array:
    """``buffer`` with ``value`` in micro-batch ``micro_batch``'s slot if ``take`` and the
    micro-batch is real (not a bubble's dummy)."""
    slot = jnp.maximum(micro_batch, 0) % slots
    keep = take & (micro_batch >= 0)
    return buffer.at[slot].set(jnp.where(keep, value, buffer[slot]))


def _first(rows: Rows) -> Rows:
    """A device's own row of its ``[1, width]`` blocks."""
    return jax.tree.map(lambda a: a[0], rows)


def _describe(value: Any) -> str:
    if isinstance(value, jax.ShapeDtypeStruct):
        return f"{value.dtype}{list(value.shape)}"
    return str(value)
