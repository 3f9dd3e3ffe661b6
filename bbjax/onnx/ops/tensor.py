"""Tensor shape, indexing and data-movement ops."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax import lax

from bbjax.onnx.dtypes import numpy_dtype
from bbjax.onnx.ops.registry import op

# -- helpers ----------------------------------------------------------------------------------


def _axis(ctx, axis: int, rank: int, what: str = "axis") -> int:
    """``axis`` from ``[-rank, rank)`` normalized into ``[0, rank)``."""
    if not -rank <= axis < rank:
        raise ctx.error(f"{what} {axis} is out of range for an input of rank {rank}")
    return axis + rank if axis < 0 else axis


def _axes(ctx, axes, rank: int, what: str = "axes") -> list[int]:
    normalized = [_axis(ctx, int(a), rank, what) for a in axes]
    if len(set(normalized)) != len(normalized):
        raise ctx.error(f"{what} {list(axes)} name an axis twice")
    return normalized


def _index_dtype():
    """int64, or int32 when JAX runs without x64."""
    return jax.dtypes.canonicalize_dtype(np.int64)


def _check_indices(ctx, indices, dim: int, what: str = "indices") -> None:
    """Reject static indices outside ``[-dim, dim)`` (traced ones cannot be checked)."""
    if isinstance(indices, (np.ndarray, np.generic)) and np.size(indices):
        low, high = int(np.min(indices)), int(np.max(indices))
        if low < -dim or high >= dim:
            raise ctx.error(f"{what} must lie in [{-dim}, {dim - 1}], got values in "
                            f"[{low}, {high}]")


def _optional_ints(ctx, value, what: str) -> list[int] | None:
    return None if value is None else ctx.static_ints(value, what)


def _data_dependent(op_type: str, what: str) -> str:
    return f"{op_type}'s {what} (its output shape depends on its values)"


# -- shapes -----------------------------------------------------------------------------------


@op("Shape")
def shape(ctx, data):
    """The (sliced, from opset 15) shape as a static int64 vector."""
    dims = np.shape(data)[ctx.attr("start", 0):ctx.attr("end", None)]
    return np.array(dims, dtype=np.int64)


@op("Size")
def size(ctx, data):
    return np.array(math.prod(np.shape(data)), dtype=np.int64)


@op("Reshape")
def reshape(ctx, data, shape=None):
    """A 0 copies the input dim at that position (unless ``allowzero``); one -1 is inferred."""
    if ctx.opset < 5:
        target = [int(d) for d in ctx.attr("shape")]
    else:
        target = ctx.static_ints(shape, "Reshape's shape input")
    allowzero = ctx.attr("allowzero", 0)
    dims = np.shape(data)
    if target.count(-1) > 1:
        raise ctx.error(f"shape {target} has more than one -1")
    if allowzero and 0 in target and -1 in target:
        raise ctx.error(f"shape {target} has both 0 and -1 with allowzero=1")
    out = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(dims):
                raise ctx.error(f"shape {target} copies dim {i} of a rank-{len(dims)} input")
            d = dims[i]
        elif d < -1:
            raise ctx.error(f"shape {target} has a negative dim")
        out.append(d)
    known = math.prod(d for d in out if d != -1)
    total = math.prod(dims)
    if -1 in out:
        if known == 0 or total % known:
            raise ctx.error(f"cannot reshape {tuple(dims)} into {target}")
        out[out.index(-1)] = total // known
    elif known != total:
        raise ctx.error(f"cannot reshape {tuple(dims)} into {target}")
    return jnp.reshape(data, out)


@op("Flatten")
def flatten(ctx, data):
    dims = np.shape(data)
    axis = ctx.attr("axis", 1)
    if not -len(dims) <= axis <= len(dims):
        raise ctx.error(f"axis {axis} is out of range for an input of rank {len(dims)}")
    axis = axis + len(dims) if axis < 0 else axis
    return jnp.reshape(data, (math.prod(dims[:axis]), math.prod(dims[axis:])))


@op("Squeeze")
def squeeze(ctx, data, axes=None):
    dims = np.shape(data)
    axes = ctx.attr("axes", None) if ctx.opset < 13 else _optional_ints(
        ctx, axes, "Squeeze's axes input")
    if axes is None:
        axes = [i for i, d in enumerate(dims) if d == 1]
    axes = _axes(ctx, axes, len(dims))
    for a in axes:
        if dims[a] != 1:
            raise ctx.error(f"cannot squeeze axis {a} of size {dims[a]}")
    return jnp.reshape(data, [d for i, d in enumerate(dims) if i not in axes])


@op("Unsqueeze")
def unsqueeze(ctx, data, axes=None):
    """``axes`` index the output, so negative ones count from the output's rank."""
    axes = ctx.attr("axes") if ctx.opset < 13 else ctx.static_ints(axes, "Unsqueeze's axes input")
    dims = list(np.shape(data))
    axes = _axes(ctx, axes, len(dims) + len(axes))
    for a in sorted(axes):
        dims.insert(a, 1)
    return jnp.reshape(data, dims)


@op("Transpose")
def transpose(ctx, data):
    rank = np.ndim(data)
    perm = ctx.attr("perm", None)
    perm = list(range(rank))[::-1] if perm is None else perm
    if sorted(perm) != list(range(rank)):
        raise ctx.error(f"perm {perm} is not a permutation of the {rank} axes")
    return jnp.transpose(data, perm)


@op("Expand")
def expand(ctx, data, shape):
    """Broadcast ``data`` and ``shape`` against each other (either may have the larger dims)."""
    target = tuple(ctx.static_ints(shape, "Expand's shape input"))
    try:
        out = np.broadcast_shapes(np.shape(data), target)
    except ValueError:
        raise ctx.error(f"cannot broadcast {np.shape(data)} with {target}") from None
    return jnp.broadcast_to(data, out)


@op("Tile")
def tile(ctx, data, repeats, axis=None):
    """Opset 1 repeats ``tiles`` times along the single ``axis`` input."""
    reps = ctx.static_ints(repeats, "Tile's repeats input")
    if ctx.opset < 6:
        along = _axis(ctx, ctx.static_ints(axis, "Tile's axis input")[0], np.ndim(data))
        reps = [reps[0] if i == along else 1 for i in range(np.ndim(data))]
    if len(reps) != np.ndim(data):
        raise ctx.error(f"repeats {reps} must have one entry per axis of the rank-"
                        f"{np.ndim(data)} input")
    return jnp.tile(data, reps)


# -- joining and splitting --------------------------------------------------------------------


@op("Concat")
def concat(ctx, *inputs):
    rank = np.ndim(inputs[0])
    if rank == 0:
        raise ctx.error("cannot concatenate scalars")
    axis = _axis(ctx, ctx.attr("axis", 1) if ctx.opset < 4 else ctx.attr("axis"), rank)
    return jnp.concatenate(inputs, axis=axis)


def split_sizes(ctx, dim: int, sizes: list[int] | None, parts: int) -> list[int]:
    """Chunk sizes along an axis of length ``dim``; ``sizes`` given, or ``parts`` chunks of
    ``ceil(dim / parts)`` with a smaller last one."""
    if sizes is None:
        chunk = -(-dim // parts)
        sizes = [chunk] * (parts - 1) + [dim - chunk * (parts - 1)]
        if sizes[-1] < 0:
            raise ctx.error(f"cannot split a dim of {dim} into {parts} ceil-sized chunks")
    if any(s < 0 for s in sizes) or sum(sizes) != dim:
        raise ctx.error(f"split sizes {sizes} do not add up to the dim {dim}")
    return sizes


def split_along(data, sizes: list[int], axis: int) -> list:
    starts = np.cumsum([0] + sizes[:-1])
    return [lax.slice_in_dim(data, int(s), int(s) + n, axis=axis) for s, n in zip(starts, sizes)]


@op("Split")
def split(ctx, data, split=None):
    """Sizes from the ``split`` input (opset 13+, or opset 1) or attribute; else
    ``num_outputs`` (opset 18+, defaulting to the node's output count) near-equal chunks."""
    rank = np.ndim(data)
    axis = _axis(ctx, ctx.attr("axis", 0), rank)
    sizes = None if ctx.opset >= 13 else ctx.attr("split", None)
    if sizes is None:
        sizes = _optional_ints(ctx, split, "Split's split input")
    parts = ctx.attr("num_outputs", ctx.num_outputs)
    if parts != ctx.num_outputs:
        raise ctx.error(f"num_outputs={parts} but the node has {ctx.num_outputs} outputs")
    if sizes is not None and len(sizes) != parts:
        raise ctx.error(f"{len(sizes)} split sizes for {parts} outputs")
    return tuple(split_along(data, split_sizes(ctx, np.shape(data)[axis], sizes, parts), axis))


@op("Slice")
def slice_(ctx, data, starts=None, ends=None, axes=None, steps=None):
    """Python slicing per axis: out-of-range starts/ends clamp, negative ones count from the end."""
    rank = np.ndim(data)
    if ctx.opset < 10:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes, steps = ctx.attr("axes", None), None
    else:
        starts = ctx.static_ints(starts, "Slice's starts input")
        ends = ctx.static_ints(ends, "Slice's ends input")
        axes = _optional_ints(ctx, axes, "Slice's axes input")
        steps = _optional_ints(ctx, steps, "Slice's steps input")
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ctx.error("starts, ends, axes and steps must have the same length")
    if 0 in steps:
        raise ctx.error("steps must not be 0")
    index = [slice(None)] * rank
    for a, start, end, step in zip(_axes(ctx, axes, rank), starts, ends, steps):
        index[a] = slice(start, end, step)
    return data[tuple(index)]


@op("Pad")
def pad(ctx, data, pads=None, constant_value=None, axes=None):
    """Negative pads crop. Non-constant modes crop first, then pad like ``numpy.pad``."""
    dims = np.shape(data)
    mode = ctx.attr("mode", "constant")
    if ctx.opset < 11:
        raw = [int(p) for p in ctx.attr("paddings" if ctx.opset < 2 else "pads")]
        constant_value = ctx.attr("value", 0.0)
        axes = None
    else:
        raw = ctx.static_ints(pads, "Pad's pads input")
        axes = _optional_ints(ctx, axes, "Pad's axes input")
    axes = list(range(len(dims))) if axes is None else _axes(ctx, axes, len(dims))
    if len(raw) != 2 * len(axes):
        raise ctx.error(f"pads {raw} must have two entries per padded axis ({len(axes)})")
    widths = [(0, 0)] * len(dims)
    for i, a in enumerate(axes):
        widths[a] = (raw[i], raw[i + len(axes)])
    if mode == "constant":
        value = jnp.zeros((), data.dtype) if constant_value is None else jnp.reshape(
            jnp.asarray(constant_value).astype(data.dtype), ())
        return lax.pad(data, value, [(lo, hi, 0) for lo, hi in widths])
    if mode not in ("reflect", "edge", "wrap"):
        raise ctx.error(f"unknown mode {mode!r}")
    crop = tuple(slice(max(-lo, 0), d - max(-hi, 0)) for (lo, hi), d in zip(widths, dims))
    cropped = data[crop]
    if any(s == 0 for s, (lo, hi) in zip(np.shape(cropped), widths) if lo > 0 or hi > 0):
        raise ctx.error(f"{mode} padding needs a non-empty axis to pad")
    return jnp.pad(cropped, [(max(lo, 0), max(hi, 0)) for lo, hi in widths], mode=mode)


@op("CenterCropPad")
def center_crop_pad(ctx, data, shape):
    """Crop or zero-pad each listed axis to ``shape`` around its centre (extra goes to the end)."""
    dims = np.shape(data)
    target = ctx.static_ints(shape, "CenterCropPad's shape input")
    axes = ctx.attr("axes", None)
    axes = list(range(len(dims))) if axes is None else _axes(ctx, axes, len(dims))
    if len(target) != len(axes):
        raise ctx.error(f"shape {target} must have one entry per axis in {axes}")
    widths = [(0, 0)] * len(dims)
    for a, size in zip(axes, target):
        if size < dims[a]:
            start = (dims[a] - size) // 2
            data = lax.slice_in_dim(data, start, start + size, axis=a)
        elif size > dims[a]:
            before = (size - dims[a]) // 2
            widths[a] = (before, size - dims[a] - before)
    return jnp.pad(data, widths)


# -- indexing ---------------------------------------------------------------------------------


@op("Gather")
def gather(ctx, data, indices):
    axis = _axis(ctx, ctx.attr("axis", 0), np.ndim(data))
    _check_indices(ctx, indices, np.shape(data)[axis])
    return jnp.take(data, indices, axis=axis)


def _element_index(ctx, data, indices, axis: int) -> tuple:
    """The index tuple addressing ``data[..., indices[i, j, ...], ...]`` element by element."""
    if np.ndim(indices) != np.ndim(data):
        raise ctx.error(f"indices of rank {np.ndim(indices)} for data of rank {np.ndim(data)}")
    _check_indices(ctx, indices, np.shape(data)[axis])
    grid = list(np.indices(np.shape(indices), sparse=True))
    grid[axis] = indices
    return tuple(grid)


@op("GatherElements")
def gather_elements(ctx, data, indices):
    """``out[i][j][k] = data[indices[i][j][k]][j][k]`` for axis 0, likewise for other axes."""
    axis = _axis(ctx, ctx.attr("axis", 0), np.ndim(data))
    return jnp.asarray(data)[_element_index(ctx, data, indices, axis)]


def _nd_index(ctx, data, indices, batch_dims: int) -> tuple:
    """The index tuple for GatherND / ScatterND: batch aranges then the index columns."""
    ishape, dshape = np.shape(indices), np.shape(data)
    if not ishape or ishape[:batch_dims] != dshape[:batch_dims]:
        raise ctx.error(f"indices {ishape} do not match data {dshape} on the {batch_dims} "
                        "batch dims")
    depth = ishape[-1]
    if batch_dims + depth > len(dshape):
        raise ctx.error(f"index tuples of length {depth} are too long for data {dshape}")
    lead = len(ishape) - 1
    batch = [np.arange(n).reshape((1,) * i + (n,) + (1,) * (lead - i - 1))
             for i, n in enumerate(dshape[:batch_dims])]
    columns = []
    for j in range(depth):
        column = indices[..., j]
        _check_indices(ctx, column, dshape[batch_dims + j])
        columns.append(column)
    return tuple(batch + columns)


@op("GatherND")
def gather_nd(ctx, data, indices):
    index = _nd_index(ctx, data, indices, ctx.attr("batch_dims", 0))
    return jnp.asarray(data)[index]


_SCATTER = {
    "none": lambda ref, u: ref.set(u),
    "add": lambda ref, u: ref.add(u),
    "mul": lambda ref, u: ref.multiply(u),
    "max": lambda ref, u: ref.max(u),
    "min": lambda ref, u: ref.min(u),
}


def _scatter(ctx, data, index: tuple, updates):
    reduction = ctx.attr("reduction", "none")
    if reduction not in _SCATTER:
        raise ctx.error(f"unknown reduction {reduction!r}")
    return _SCATTER[reduction](jnp.asarray(data).at[index], updates)


@op("ScatterND")
def scatter_nd(ctx, data, indices, updates):
    """Duplicate indices with reduction 'none' leave an unspecified one of the updates."""
    index = _nd_index(ctx, data, indices, 0)
    want = np.shape(indices)[:-1] + np.shape(data)[np.shape(indices)[-1]:]
    if np.shape(updates) != want:
        raise ctx.error(f"updates have shape {np.shape(updates)}, expected {want}")
    return _scatter(ctx, data, index, updates)


@op("ScatterElements", "Scatter")
def scatter_elements(ctx, data, indices, updates):
    """Duplicate indices with reduction 'none' leave an unspecified one of the updates."""
    axis = _axis(ctx, ctx.attr("axis", 0), np.ndim(data))
    if np.shape(updates) != np.shape(indices):
        raise ctx.error(f"updates {np.shape(updates)} and indices {np.shape(indices)} differ")
    return _scatter(ctx, data, _element_index(ctx, data, indices, axis), updates)


@op("OneHot")
def one_hot(ctx, indices, depth, values):
    """Float indices are truncated to integers; indices outside [-depth, depth) select nothing."""
    depth = ctx.static(depth, "OneHot's depth input").reshape(-1)
    if depth.size != 1:
        raise ctx.error("depth must have exactly one element")
    depth = int(depth[0])
    rank = np.ndim(indices)
    axis = ctx.attr("axis", -1)
    if not -rank - 1 <= axis <= rank:
        raise ctx.error(f"axis {axis} is out of range for an output of rank {rank + 1}")
    axis = axis + rank + 1 if axis < 0 else axis
    idx = jnp.asarray(indices)
    if not jnp.issubdtype(idx.dtype, jnp.integer):
        idx = idx.astype(_index_dtype())
    idx = jnp.where(idx < 0, idx + depth, idx)
    classes = np.arange(depth).reshape((depth,) + (1,) * (rank - axis))
    hit = jnp.expand_dims(idx, axis) == classes
    values = jnp.reshape(values, (2,))
    return jnp.where(hit, values[1], values[0])


@op("TopK")
def top_k(ctx, x, k=None):
    """Values and int64 indices of the k largest (or smallest) entries along ``axis``, sorted;
    equal values keep the lower index first (NaN counts as the largest)."""
    rank = np.ndim(x)
    axis = _axis(ctx, ctx.attr("axis", -1), rank)
    if ctx.opset < 10:
        count = ctx.attr("k")
    else:
        ks = ctx.static_ints(k, "TopK's k input")
        if len(ks) != 1:
            raise ctx.error(f"k must have exactly one element, got {ks}")
        count = ks[0]
    n = np.shape(x)[axis]
    if not 0 <= count <= n:
        raise ctx.error(f"k={count} is out of range for an axis of size {n}")
    moved = jnp.moveaxis(x, axis, -1)
    iota = lax.broadcasted_iota(_index_dtype(), moved.shape, rank - 1)
    if ctx.attr("largest", 1):
        values, neg = lax.sort((moved, -iota), num_keys=2)
        values, indices = values[..., ::-1], -neg[..., ::-1]
    else:
        values, indices = lax.sort((moved, iota), num_keys=2)
    return (jnp.moveaxis(values[..., :count], -1, axis),
            jnp.moveaxis(indices[..., :count], -1, axis))


@op("Trilu")
def trilu(ctx, x, k=None):
    """Keep the upper (or lower) triangle of the last two axes from diagonal ``k`` on; ``k``
    may be traced."""
    if np.ndim(x) < 2:
        raise ctx.error(f"input must have rank >= 2, got {np.ndim(x)}")
    rows, cols = np.shape(x)[-2:]
    offset = 0 if k is None else jnp.reshape(k, ())
    diagonal = np.arange(cols)[None, :] - np.arange(rows)[:, None]
    keep = (jnp.greater_equal if ctx.attr("upper", 1) else jnp.less_equal)(diagonal, offset)
    return jnp.where(keep, x, jnp.zeros((), x.dtype))


@op("ReverseSequence")
def reverse_sequence(ctx, data, sequence_lens):
    """Reverse the first ``sequence_lens[b]`` steps of each batch entry; lens may be traced."""
    rank = np.ndim(data)
    if rank < 2:
        raise ctx.error(f"input must have rank >= 2, got {rank}")
    batch_axis = _axis(ctx, ctx.attr("batch_axis", 1), rank, "batch_axis")
    time_axis = _axis(ctx, ctx.attr("time_axis", 0), rank, "time_axis")
    if batch_axis == time_axis:
        raise ctx.error("batch_axis and time_axis must differ")
    dims = np.shape(data)
    if np.shape(sequence_lens) != (dims[batch_axis],):
        raise ctx.error(f"sequence_lens must have shape ({dims[batch_axis]},), got "
                        f"{np.shape(sequence_lens)}")
    along = [1] * rank
    along[time_axis] = dims[time_axis]
    t = jnp.arange(dims[time_axis]).reshape(along)
    along = [1] * rank
    along[batch_axis] = dims[batch_axis]
    lens = jnp.reshape(sequence_lens, along)
    source = jnp.broadcast_to(jnp.where(t < lens, lens - 1 - t, t), dims)
    return jnp.take_along_axis(data, source, axis=time_axis)


# -- generators -------------------------------------------------------------------------------


@op("Range")
def range_(ctx, start, limit, delta):
    """Static (its length depends on the values); float16/bfloat16 accumulate in
    ``stash_type`` (opset 27+), everything else as numpy.arange on Python scalars."""
    start = ctx.static(start, _data_dependent("Range", "start input"))
    limit = ctx.static(limit, _data_dependent("Range", "limit input"))
    delta = ctx.static(delta, _data_dependent("Range", "delta input"))
    if delta == 0:
        raise ctx.error("delta must not be 0")
    dtype = start.dtype
    low_precision = dtype in (np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))
    if ctx.opset >= 27 and low_precision:
        stash = ctx.attr("stash_type", 1)
        compute = {1: np.float32, 11: np.float64}.get(stash)
        if compute is None:
            raise ctx.error(f"stash_type must be 1 (float) or 11 (double), got {stash}")
        return np.arange(start.astype(compute).item(), float(limit), float(delta),
                         dtype=compute).astype(dtype)
    return np.arange(start.item(), limit.item(), delta.item()).astype(dtype)


@op("ConstantOfShape")
def constant_of_shape(ctx, shape):
    dims = ctx.static_ints(shape, "ConstantOfShape's shape input")
    if any(d < 0 for d in dims):
        raise ctx.error(f"shape {dims} has a negative dim")
    value = ctx.attr("value", None)
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    if value.size != 1:
        raise ctx.error(f"value must have exactly one element, got {value.size}")
    return np.full(dims, value.reshape(()), dtype=value.dtype)


@op("EyeLike")
def eye_like(ctx, data):
    """Ones on diagonal ``k`` of a matrix shaped like the 2-D input (dtype from ``dtype``)."""
    if np.ndim(data) != 2:
        raise ctx.error(f"input must be 2-D, got shape {np.shape(data)}")
    dtype = ctx.attr("dtype", None)
    dtype = np.dtype(data.dtype) if dtype is None else numpy_dtype(dtype)
    return np.eye(*np.shape(data), k=ctx.attr("k", 0), dtype=dtype)


# -- space / depth ----------------------------------------------------------------------------


def _blocks(ctx, data) -> tuple[int, tuple[int, ...], str]:
    if np.ndim(data) != 4:
        raise ctx.error(f"input must be 4-D (N, C, H, W), got shape {np.shape(data)}")
    mode = ctx.attr("mode", "DCR")
    if mode not in ("DCR", "CRD"):
        raise ctx.error(f"mode must be 'DCR' or 'CRD', got {mode!r}")
    return ctx.attr("blocksize"), np.shape(data), mode


@op("DepthToSpace")
def depth_to_space(ctx, data):
    bs, (n, c, h, w), mode = _blocks(ctx, data)
    if c % (bs * bs):
        raise ctx.error(f"channels {c} are not divisible by blocksize^2 = {bs * bs}")
    if mode == "DCR":
        tmp = jnp.reshape(data, (n, bs, bs, c // (bs * bs), h, w))
        tmp = jnp.transpose(tmp, (0, 3, 4, 1, 5, 2))
    else:
        tmp = jnp.reshape(data, (n, c // (bs * bs), bs, bs, h, w))
        tmp = jnp.transpose(tmp, (0, 1, 4, 2, 5, 3))
    return jnp.reshape(tmp, (n, c // (bs * bs), h * bs, w * bs))


@op("SpaceToDepth")
def space_to_depth(ctx, data):
    bs, (n, c, h, w), mode = _blocks(ctx, data)
    if h % bs or w % bs:
        raise ctx.error(f"spatial dims {(h, w)} are not divisible by blocksize {bs}")
    tmp = jnp.reshape(data, (n, c, h // bs, bs, w // bs, bs))
    perm = (0, 3, 5, 1, 2, 4) if mode == "DCR" else (0, 1, 3, 5, 2, 4)
    return jnp.reshape(jnp.transpose(tmp, perm), (n, c * bs * bs, h // bs, w // bs))


# -- data-dependent shapes (static inputs only) -----------------------------------------------


@op("Compress")
def compress(ctx, data, condition):
    """Like numpy.compress: keep the slices along ``axis`` (or of the flattened input) where
    ``condition`` is true; the condition must be known at trace time."""
    keep = np.flatnonzero(ctx.static(condition, _data_dependent("Compress", "condition input")))
    axis = ctx.attr("axis", None)
    if axis is None:
        data, axis = jnp.ravel(data), 0
    axis = _axis(ctx, axis, np.ndim(data))
    if keep.size and keep[-1] >= np.shape(data)[axis]:
        raise ctx.error(f"condition selects index {keep[-1]} of an axis of size "
                        f"{np.shape(data)[axis]}")
    return jnp.take(data, keep, axis=axis)


@op("NonZero")
def non_zero(ctx, x):
    """Indices of the non-zero elements, shape (rank, count); the input must be known at
    trace time."""
    x = ctx.static(x, _data_dependent("NonZero", "input"))
    if x.ndim == 0:
        return np.zeros((0, int(np.count_nonzero(x))), dtype=np.int64)
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@op("Unique")
def unique(ctx, x):
    """numpy.unique's values, first indices, inverse indices and counts; with ``sorted=0``
    ordered by first occurrence. The input must be known at trace time."""
    x = ctx.static(x, _data_dependent("Unique", "input"))
    axis = ctx.attr("axis", None)
    if axis is None:
        x = x.reshape(-1)
        y, first, inverse, counts = np.unique(x, return_index=True, return_inverse=True,
                                              return_counts=True)
        axis = 0
    else:
        axis = _axis(ctx, axis, x.ndim)
        y, first, inverse, counts = np.unique(x, return_index=True, return_inverse=True,
                                              return_counts=True, axis=axis)
    inverse = inverse.reshape(-1)
    if not ctx.attr("sorted", 1):
        order = np.argsort(first, kind="stable")
        position = np.empty_like(order)
        position[order] = np.arange(order.size)
        first, counts, inverse = first[order], counts[order], position[inverse]
        y = np.take(x, first, axis=axis)
    return (y, first.astype(np.int64), inverse.astype(np.int64), counts.astype(np.int64))
