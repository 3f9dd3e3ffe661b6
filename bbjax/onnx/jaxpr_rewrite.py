"""Rewrite a traced jaxpr into the form the ONNX exporter handles.

Three rewrites, in one re-tracing pass (:func:`prepare_for_onnx`):

- **inline calls**: ``jit``/``pjit``, ``closed_call``, ``remat`` and ``custom_jvp`` /
  ``custom_vjp`` calls are replaced by their bodies (export only needs the primal
  computation; gradients were already taken when the function was traced);
- **raw PRNG keys**: typed key arrays become their raw ``uint32`` data and key operations
  become the primitives of :mod:`bbjax.onnx.random_primitives`;
- **element-wise scatters**: every ``scatter*`` with window dimensions or batching
  dimensions becomes an equivalent scatter of single elements (the ONNX ``ScatterND`` form),
  with out-of-bounds windows neutralised as XLA drops them.

Loop and branch bodies (``scan``, ``while``, ``cond``) are rewritten recursively.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax._src import source_info_util  # keeps user source lines through the rewrite
from jax.extend import core as jcore

from bbjax.errors import ExportError
from bbjax.onnx import random_primitives as rp

_INLINED_CALLS = {
    "pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
    "remat": "jaxpr", "checkpoint": "jaxpr", "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
    "custom_lin": None,
}
_SUBJAXPR_PARAMS = {"scan": ("jaxpr",), "while": ("cond_jaxpr", "body_jaxpr"),
                    "cond": ("branches",)}
_SCATTERS = {"scatter": None, "scatter-add": 0, "scatter_add": 0, "scatter-mul": 1,
             "scatter_mul": 1, "scatter-min": np.inf, "scatter_min": np.inf,
             "scatter-max": -np.inf, "scatter_max": -np.inf, "scatter_sub": 0,
             "scatter-sub": 0}


@dataclass(frozen=True)
class RawKey:
    """A typed key array during the rewrite: its raw data and PRNG implementation."""

    data: Any
    impl: str


def source_of(eqn: Any) -> str:
    """``file:line (function)`` of the user code that produced ``eqn``."""
    try:
        return source_info_util.summarize(eqn.source_info)
    except Exception:  # source info is best effort
        return "<unknown>"


def prepare_for_onnx(closed: jcore.ClosedJaxpr) -> jcore.ClosedJaxpr:
    """The rewritten equivalent of ``closed`` (same inputs and outputs)."""
    avals = [v.aval for v in closed.jaxpr.invars]
    for aval in avals:
        if jax.dtypes.issubdtype(aval.dtype, jax.dtypes.prng_key):
            raise ExportError("typed PRNG key inputs must be passed as raw key data")
    return jax.make_jaxpr(lambda *args: _eval(closed.jaxpr, closed.consts, args))(
        *[jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in avals])


def _rewrite_closed(closed: jcore.ClosedJaxpr) -> jcore.ClosedJaxpr:
    new = prepare_for_onnx(closed)
    if [v.aval for v in new.jaxpr.outvars] != [v.aval for v in closed.jaxpr.outvars]:
        raise ExportError("a loop or branch body changes its output types when rewritten")
    return new


def _eval(jaxpr: jcore.Jaxpr, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    env: dict[Any, Any] = {}

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    def write(v, value):
        if not isinstance(v, jcore.DropVar):
            env[v] = value

    for v, value in zip(jaxpr.constvars, consts):
        write(v, value)
    for v, value in zip(jaxpr.invars, args):
        write(v, value)
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        try:
            with source_info_util.user_context(eqn.source_info.traceback,
                                               name_stack=eqn.source_info.name_stack):
                outvals = _eval_eqn(eqn, invals)
        except ExportError as exc:
            if exc.primitive is None:
                raise ExportError(str(exc), primitive=eqn.primitive.name,
                                  source=source_of(eqn)) from exc
            raise
        if not eqn.primitive.multiple_results:
            outvals = [outvals]
        for v, value in zip(eqn.outvars, outvals):
            write(v, value)
    return [_unkey_output(read(v)) for v in jaxpr.outvars]


def _unkey_output(value: Any) -> Any:
    if isinstance(value, RawKey):
        raise ExportError("a typed PRNG key is returned; return jax.random.key_data(key) or "
                          "use keys as graph inputs and outputs of the exported function")
    return value


def _eval_eqn(eqn: Any, invals: list[Any]) -> Any:
    name = eqn.primitive.name
    params = dict(eqn.params)
    if name in _INLINED_CALLS:
        return _inline(eqn, invals)
    if name.startswith("random_") or any(isinstance(v, RawKey) for v in invals):
        return _eval_key_op(name, params, invals)
    if name in _SUBJAXPR_PARAMS:
        for param in _SUBJAXPR_PARAMS[name]:
            value = params[param]
            params[param] = (tuple(_rewrite_closed(b) for b in value)
                             if isinstance(value, tuple) else _rewrite_closed(value))
        return eqn.primitive.bind(*invals, **params)
    if name == "pad" and any(interior for _, _, interior in params["padding_config"]):
        return _pad_with_interior(*invals, params["padding_config"])
    if name == "dynamic_slice" and not any(isinstance(v, RawKey) for v in invals):
        return _dynamic_slice_as_gathers(invals[0], invals[1:], params["slice_sizes"])
    if name == "platform_index":
        return _platform_neutral_index(params["platforms"])
    if name == "conv_general_dilated":
        return _canonical_conv(*invals, **params)
    if name == "select_and_scatter_add":
        return _select_and_scatter_add(*invals, **params)
    if name in _SCATTERS and not _is_elementwise_scatter(params, invals):
        return _elementwise_scatter(name, params, *invals)
    return eqn.primitive.bind(*invals, **eqn.primitive.get_bind_params(params))


def _inline(eqn: Any, invals: list[Any]) -> list[Any]:
    name = eqn.primitive.name
    param = _INLINED_CALLS[name]
    sub = eqn.params.get(param) if param else None
    if sub is None:
        raise ExportError(f"cannot inline call primitive {name}")
    if isinstance(sub, jcore.ClosedJaxpr):
        n_in = len(sub.jaxpr.invars)
        outs = _eval(sub.jaxpr, sub.consts, invals[:n_in])
    else:
        outs = _eval(sub, (), invals[: len(sub.invars)])
    return outs if eqn.primitive.multiple_results else outs[0]


# -- PRNG keys ----------------------------------------------------------------------------------

_KEY_STRUCTURAL = {"slice", "squeeze", "reshape", "broadcast_in_dim", "concatenate",
                   "transpose", "select_n", "copy", "copy_p", "expand_dims", "rev",
                   "dynamic_slice", "dynamic_update_slice", "optimization_barrier"}


def _eval_key_op(name: str, params: dict, invals: list[Any]) -> Any:
    if name == "random_wrap":
        return RawKey(invals[0], params["impl"].name)
    if name == "random_unwrap":
        return invals[0].data
    if name == "random_bits":
        key = invals[0]
        return rp.random_bits_p.bind(key.data, impl=key.impl, bit_width=params["bit_width"],
                                     shape=tuple(params["shape"]))
    if name == "random_split":
        key = invals[0]
        return RawKey(rp.random_split_p.bind(key.data, impl=key.impl,
                                             shape=tuple(params["shape"])), key.impl)
    if name == "random_fold_in":
        key, msgs = invals
        return RawKey(rp.random_fold_in_p.bind(key.data, msgs, impl=key.impl), key.impl)
    if name == "random_seed":
        impl = params["impl"].name
        return RawKey(rp.random_seed_p.bind(invals[0], impl=impl), impl)
    if name == "random_clone":
        return invals[0]
    if name in _KEY_STRUCTURAL:
        return _key_structural(name, params, invals)
    raise ExportError("this primitive takes a typed PRNG key, which ONNX cannot carry; pass "
                      "raw keys (jax.random.PRNGKey or jax.random.key_data) through it")


def _key_structural(name: str, params: dict, invals: list[Any]) -> Any:
    """Apply a shape-only op to keys by applying it to their raw data (trailing key dims)."""
    impl = next(v.impl for v in invals if isinstance(v, RawKey))
    extra = rp._key_shape(impl)
    k = len(extra)
    datas = [v.data if isinstance(v, RawKey) else v for v in invals]
    if name == "slice":
        strides = params.get("strides") or (1,) * len(params["start_indices"])
        out = lax.slice(datas[0], tuple(params["start_indices"]) + (0,) * k,
                        tuple(params["limit_indices"]) + extra, tuple(strides) + (1,) * k)
    elif name == "squeeze":
        out = lax.squeeze(datas[0], params["dimensions"])
    elif name == "reshape":
        out = lax.reshape(datas[0], tuple(params["new_sizes"]) + extra)
    elif name == "expand_dims":
        out = lax.expand_dims(datas[0], params["dimensions"])
    elif name == "broadcast_in_dim":
        rank = len(params["shape"])
        out = lax.broadcast_in_dim(datas[0], tuple(params["shape"]) + extra,
                                   tuple(params["broadcast_dimensions"])
                                   + tuple(range(rank, rank + k)))
    elif name == "concatenate":
        out = lax.concatenate(datas, params["dimension"])
    elif name == "transpose":
        perm = tuple(params["permutation"])
        out = lax.transpose(datas[0], perm + tuple(range(len(perm), len(perm) + k)))
    elif name == "rev":
        out = lax.rev(datas[0], params["dimensions"])
    elif name == "select_n":
        which, *cases = datas
        which = lax.broadcast_in_dim(which, cases[0].shape, tuple(range(which.ndim)))
        out = lax.select_n(which, *cases)
    elif name in ("copy", "copy_p", "optimization_barrier"):
        out = datas[0] if len(datas) == 1 else datas
    elif name == "dynamic_slice":
        operand, *starts = datas
        out = lax.dynamic_slice(operand, list(starts) + [0] * k,
                                tuple(params["slice_sizes"]) + extra)
    else:  # dynamic_update_slice
        operand, update, *starts = datas
        out = lax.dynamic_update_slice(operand, update, list(starts) + [0] * k)
    return RawKey(out, impl)


# -- scatters -----------------------------------------------------------------------------------

def _is_elementwise_scatter(params: dict, invals: list[Any]) -> bool:
    """Already single-element updates at indices promised to be in bounds."""
    dnums = params["dimension_numbers"]
    rank = np.ndim(invals[0])
    return ("PROMISE_IN_BOUNDS" in str(params.get("mode")).upper()
            and not dnums.update_window_dims and len(dnums.inserted_window_dims) == rank
            and tuple(dnums.scatter_dims_to_operand_dims) == tuple(range(rank))
            and not getattr(dnums, "operand_batching_dims", ()))


def _elementwise_scatter(name: str, params: dict, operand, indices, updates) -> jax.Array:
    """The same scatter as one update per element, with full operand indices."""
    dnums = params["dimension_numbers"]
    mode = params.get("mode")
    op_shape = operand.shape
    rank = len(op_shape)
    batching = tuple(getattr(dnums, "operand_batching_dims", ()))
    idx_batching = tuple(getattr(dnums, "scatter_indices_batching_dims", ()))
    window_update_dims = tuple(dnums.update_window_dims)
    scatter_update_dims = [d for d in range(updates.ndim) if d not in window_update_dims]
    window_operand_dims = [d for d in range(rank)
                           if d not in dnums.inserted_window_dims and d not in batching]
    window_size = [1] * rank
    for od, ud in zip(window_operand_dims, window_update_dims):
        window_size[od] = updates.shape[ud]

    grid = [lax.broadcasted_iota(indices.dtype, updates.shape, d) for d in range(updates.ndim)]
    g = [grid[d] for d in scatter_update_dims]       # indices-batch coordinates
    index_vectors = indices[tuple(g)] if g else indices.reshape(indices.shape[-1:])
    start = [jnp.zeros(updates.shape, indices.dtype) for _ in range(rank)]
    for k, od in enumerate(dnums.scatter_dims_to_operand_dims):
        start[od] = index_vectors[..., k].astype(indices.dtype)
    for od, idim in zip(batching, idx_batching):
        start[od] = g[idim].astype(indices.dtype)
    is_clip = mode is not None and "CLIP" in str(mode).upper()
    in_bounds = jnp.ones(updates.shape, bool)
    for d in range(rank):
        limit = op_shape[d] - window_size[d]
        if is_clip:
            start[d] = jnp.clip(start[d], 0, limit)
        else:
            in_bounds &= (start[d] >= 0) & (start[d] <= limit)
    full = list(start)
    for od, ud in zip(window_operand_dims, window_update_dims):
        full[od] = start[od] + grid[ud]
    full = [jnp.where(in_bounds, f, 0) for f in full]
    neutral = _SCATTERS[name]
    if neutral is None:  # replace: dropped windows rewrite the value already there
        updates = jnp.where(in_bounds, updates, operand[tuple(full)])
    else:
        updates = jnp.where(in_bounds, updates, jnp.asarray(neutral, updates.dtype))
    ref = operand.at[tuple(full)]
    kind = name.replace("-", "_")
    apply: Callable = {"scatter": ref.set, "scatter_add": ref.add, "scatter_sub": ref.subtract,
                       "scatter_mul": ref.multiply, "scatter_min": ref.min,
                       "scatter_max": ref.max}[kind]
    if kind == "scatter_sub":
        updates = jnp.where(in_bounds, updates, 0)
    return apply(updates, mode="promise_in_bounds")


def _select_and_scatter_add(source, operand, *, select_prim, window_dimensions, window_strides,
                            padding) -> jax.Array:
    """Add each ``source`` value at the position its window selects (first max for ``ge``)."""
    pick_max = select_prim in (lax.ge_p, lax.gt_p)
    fill = -jnp.inf if pick_max else jnp.inf
    padded = lax.pad(operand, jnp.asarray(fill, operand.dtype),
                     [(lo, hi, 0) for lo, hi in padding])
    offsets = np.stack(np.unravel_index(np.arange(int(np.prod(window_dimensions))),
                                        window_dimensions), axis=-1)  # (K, rank)
    k = offsets.shape[0]
    shape = tuple(source.shape) + (k,)
    index = [lax.broadcasted_iota(np.int32, shape, d) * stride + offsets[:, d].astype(np.int32)
             for d, stride in enumerate(window_strides)]
    patches = padded[tuple(index)]
    chosen = (jnp.argmax if pick_max else jnp.argmin)(patches, axis=-1)[..., None]
    position = [jnp.take_along_axis(i, chosen, axis=-1)[..., 0] for i in index]
    grads = jnp.zeros(padded.shape, source.dtype).at[tuple(position)].add(
        source, mode="promise_in_bounds")
    return lax.slice(grads, [lo for lo, _ in padding],
                     [n - hi for n, (_, hi) in zip(padded.shape, padding)])


def _pad_with_interior(operand, padding_value, padding_config) -> jax.Array:
    """``lax.pad`` with interior padding, built from ops that have an ONNX form."""
    x = operand
    for axis, (_, _, interior) in enumerate(padding_config):
        if not interior or x.shape[axis] == 0:
            continue
        n = x.shape[axis]
        expanded = lax.expand_dims(x, (axis + 1,))
        filler = lax.broadcast_in_dim(
            padding_value.astype(x.dtype), expanded.shape[: axis + 1] + (interior,)
            + expanded.shape[axis + 2:], ())
        woven = lax.concatenate([expanded, filler], axis + 1)
        woven = lax.reshape(woven, x.shape[:axis] + (n * (interior + 1),) + x.shape[axis + 1:])
        x = lax.slice_in_dim(woven, 0, n + (n - 1) * interior, axis=axis)
    return lax.pad(x, padding_value.astype(x.dtype), [(lo, hi, 0) for lo, hi, _ in padding_config])


def _canonical_conv(lhs, rhs, *, dimension_numbers, lhs_dilation, **params) -> jax.Array:
    """The same convolution with identity dimension numbers and no input dilation."""
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    lhs = lax.transpose(lhs, tuple(lhs_spec))
    rhs = lax.transpose(rhs, tuple(rhs_spec))
    if any(d != 1 for d in lhs_dilation):
        zero = jnp.zeros((), lhs.dtype)
        lhs = _pad_with_interior(lhs, zero, [(0, 0, 0), (0, 0, 0)]
                                 + [(0, 0, d - 1) for d in lhs_dilation])
    identity = tuple(range(lhs.ndim))
    out = lax.conv_general_dilated_p.bind(
        lhs, rhs, lhs_dilation=(1,) * (lhs.ndim - 2),
        dimension_numbers=lax.ConvDimensionNumbers(identity, identity, identity), **params)
    return lax.transpose(out, tuple(np.argsort(out_spec)))


def _platform_neutral_index(platforms) -> jax.Array:
    """The branch ``lax.platform_dependent`` takes in an exported, platform-neutral model."""
    index = next((i for i, p in enumerate(platforms) if p is None), 0)
    return jnp.asarray(index, np.int32)


def _dynamic_slice_as_gathers(operand, starts, sizes) -> jax.Array:
    """``lax.dynamic_slice`` as one gather per sliced axis (XLA's clamping of starts)."""
    x = operand
    for axis, (start, size) in enumerate(zip(starts, sizes)):
        if size == x.shape[axis]:
            continue
        first = jnp.clip(jnp.asarray(start, np.int32), 0, x.shape[axis] - size)
        x = jnp.take(x, first + jnp.arange(size, dtype=np.int32), axis=axis, mode="clip")
    return x
