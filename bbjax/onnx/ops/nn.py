"""Neural-network ops: convolution, pooling, normalization, losses, attention, RNNs, resizing."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bbjax.onnx.dtypes import jax_dtype
from bbjax.onnx.ops.registry import op

_HIGHEST = lax.Precision.HIGHEST


def _index_dtype():
    return jax.dtypes.canonicalize_dtype(np.int64)


def _lowest(dtype):
    dtype = np.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating):
        return -np.inf
    return jnp.iinfo(dtype).min


def _channel_shape(x):
    """Shape that broadcasts a per-channel vector against an ``(N, C, ...)`` tensor."""
    return (-1,) + (1,) * (x.ndim - 2)


# -- convolution ------------------------------------------------------------------------------


def _kernel_shape(ctx, w):
    kernel = [int(k) for k in w.shape[2:]]
    if ctx.has_attr("kernel_shape") and list(ctx.attr("kernel_shape")) != kernel:
        raise ctx.error(f"kernel_shape {ctx.attr('kernel_shape')} disagrees with the weight "
                        f"shape {tuple(w.shape)}")
    return kernel


def _explicit_pads(ctx, n):
    """The ``pads`` attribute as per-axis ``(begin, end)`` pairs (zeros when absent)."""
    flat = list(ctx.attr("pads", None) or [0] * (2 * n))
    if len(flat) != 2 * n:
        raise ctx.error(f"pads {flat} needs {2 * n} values")
    return list(zip(flat[:n], flat[n:]))


def _geometry(ctx, x, kernel):
    """``strides``, ``dilations`` and per-axis ``(begin, end)`` pads from the node's attributes."""
    n = len(kernel)
    if x.ndim != n + 2:
        raise ctx.error(f"input of rank {x.ndim} does not match a {n}-D kernel")
    strides = list(ctx.attr("strides", None) or [1] * n)
    dilations = list(ctx.attr("dilations", None) or [1] * n)
    if len(strides) != n or len(dilations) != n:
        raise ctx.error(f"strides {strides} / dilations {dilations} need {n} values")
    auto_pad = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        totals = [max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
                  for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations)]
        return strides, dilations, _same_pads(totals, auto_pad)
    return strides, dilations, _fixed_pads(ctx, auto_pad, n)


def _same_pads(totals: list[int], auto_pad: str) -> list[tuple[int, int]]:
    """Split each total padding; the odd cell goes at the end (SAME_UPPER) or start."""
    return [(t // 2, t - t // 2) if auto_pad == "SAME_UPPER" else (t - t // 2, t // 2)
            for t in totals]


def _fixed_pads(ctx, auto_pad: str, n: int) -> list[tuple[int, int]]:
    """Pads for ``auto_pad`` VALID or NOTSET (the ``pads`` attribute)."""
    if auto_pad == "VALID":
        return [(0, 0)] * n
    if auto_pad == "NOTSET":
        return _explicit_pads(ctx, n)
    raise ctx.error(f"unknown auto_pad {auto_pad!r}")


def _conv(ctx, x, w, **kwargs):
    kernel = _kernel_shape(ctx, w)
    group = ctx.attr("group", 1)
    if x.ndim != w.ndim or x.shape[1] != w.shape[1] * group or w.shape[0] % group:
        raise ctx.error(f"input {tuple(x.shape)} and weight {tuple(w.shape)} do not match "
                        f"for group={group}")
    strides, dilations, pads = _geometry(ctx, x, kernel)
    return lax.conv_general_dilated(x, w, strides, pads, rhs_dilation=dilations,
                                    feature_group_count=group, precision=_HIGHEST, **kwargs)


@op("Conv")
def conv(ctx, x, w, b=None):
    y = _conv(ctx, x, w)
    if b is not None:
        y = y + b.reshape(_channel_shape(y))
    return y.astype(x.dtype)


@op("ConvInteger")
def conv_integer(ctx, x, w, x_zero_point=None, w_zero_point=None):
    """int32 convolution of ``x - x_zero_point`` with ``w - w_zero_point`` (per output channel)."""
    x = x.astype(jnp.int32)
    w = w.astype(jnp.int32)
    if x_zero_point is not None:
        x = x - jnp.asarray(x_zero_point).astype(jnp.int32)
    if w_zero_point is not None:
        zp = jnp.asarray(w_zero_point).astype(jnp.int32)
        w = w - (zp.reshape((-1,) + (1,) * (w.ndim - 1)) if zp.ndim == 1 else zp)
    return _conv(ctx, x, w, preferred_element_type=jnp.int32)


@op("ConvTranspose")
def conv_transpose(ctx, x, w, b=None):
    """Gradient-of-conv: a conv of the stride-dilated input with the flipped, regrouped kernel."""
    kernel = _kernel_shape(ctx, w)
    n = len(kernel)
    group = ctx.attr("group", 1)
    c_in = x.shape[1]
    if x.ndim != w.ndim or w.shape[0] != c_in or c_in % group:
        raise ctx.error(f"input {tuple(x.shape)} and weight {tuple(w.shape)} do not match "
                        f"for group={group}")
    strides = list(ctx.attr("strides", None) or [1] * n)
    dilations = list(ctx.attr("dilations", None) or [1] * n)
    out_pad = list(ctx.attr("output_padding", None) or [0] * n)
    full = [s * (size - 1) + p + (k - 1) * d + 1
            for size, s, p, k, d in zip(x.shape[2:], strides, out_pad, kernel, dilations)]
    auto_pad = ctx.attr("auto_pad", "NOTSET") or "NOTSET"
    output_shape = ctx.attr("output_shape", None)
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if output_shape is not None:
            target = list(output_shape)[-n:]
        else:
            target = [size * s for size, s in zip(x.shape[2:], strides)]
        pads = _same_pads([f - t for f, t in zip(full, target)], auto_pad)
    else:
        pads = _fixed_pads(ctx, auto_pad, n)
    c_out_g = w.shape[1]
    wg = w.reshape(group, c_in // group, c_out_g, *kernel).swapaxes(1, 2)
    wg = jnp.flip(wg.reshape(group * c_out_g, c_in // group, *kernel), axis=tuple(range(2, n + 2)))
    padding = [((k - 1) * d - lo, (k - 1) * d - hi + p)
               for k, d, (lo, hi), p in zip(kernel, dilations, pads, out_pad)]
    y = lax.conv_general_dilated(x, wg, (1,) * n, padding, lhs_dilation=strides,
                                 rhs_dilation=dilations, feature_group_count=group,
                                 precision=_HIGHEST)
    if b is not None:
        y = y + b.reshape(_channel_shape(y))
    return y.astype(x.dtype)


# -- pooling ----------------------------------------------------------------------------------


def _pool_geometry(ctx, x):
    """Kernel, strides, dilations, pads and output spatial shape of a pooling node."""
    kernel = list(ctx.attr("kernel_shape"))
    strides, dilations, pads = _geometry(ctx, x, kernel)
    ceil_mode = ctx.attr("ceil_mode", 0)
    out = []
    for size, k, s, d, (lo, hi) in zip(x.shape[2:], kernel, strides, dilations, pads):
        span = size + lo + hi - ((k - 1) * d + 1)
        if ceil_mode:
            o = -(-span // s) + 1
            if (o - 1) * s >= size + lo:  # the last window must start inside the input
                o -= 1
        else:
            o = span // s + 1
        out.append(o)
    return kernel, strides, dilations, pads, out


def _window_reduce(x, init, fn, geometry):
    kernel, strides, dilations, pads, out = geometry
    config = [(0, 0, 0), (0, 0, 0)] + [
        (lo, (o - 1) * s + (k - 1) * d + 1 - size - lo, 0)
        for size, k, s, d, (lo, _), o in zip(x.shape[2:], kernel, strides, dilations, pads, out)]
    init = jnp.asarray(init, x.dtype)
    x = lax.pad(x, init, config)
    return lax.reduce_window(x, init, fn, (1, 1, *kernel), (1, 1, *strides), "VALID",
                             window_dilation=(1, 1, *dilations))


def _window_positions(geometry):
    """Per spatial axis, the input position of each (output, kernel tap) pair."""
    kernel, strides, dilations, pads, out = geometry
    return [np.arange(o)[:, None] * s - lo + np.arange(k)[None, :] * d
            for o, k, s, d, (lo, _) in zip(out, kernel, strides, dilations, pads)]


def _window_counts(in_shape, geometry, include_pad):
    """How many input (or, with ``include_pad``, input-or-pad) cells each window covers."""
    counts = np.ones((), dtype=np.int64)
    for size, (lo, hi), pos in zip(in_shape, geometry[3],
                                   _window_positions(geometry)):
        low, high = (-lo, size + hi) if include_pad else (0, size)
        per_axis = ((pos >= low) & (pos < high)).sum(axis=1)
        counts = np.multiply.outer(counts, per_axis)
    return counts


def _window_table(in_shape, geometry):
    """Flat spatial input index of every (output cell, kernel tap) and whether it is in bounds."""
    positions = _window_positions(geometry)
    n = len(positions)
    index = np.zeros((), dtype=np.int64)
    valid = np.ones((), dtype=bool)
    for size, pos in zip(in_shape, positions):
        index = np.multiply.outer(index * size, np.ones_like(pos)) + np.clip(pos, 0, size - 1)
        valid = np.logical_and.outer(valid, (pos >= 0) & (pos < size))
    order = list(range(0, 2 * n, 2)) + list(range(1, 2 * n, 2))  # (out..., kernel...)
    cells = int(np.prod(geometry[4]))
    return (index.transpose(order).reshape(cells, -1), valid.transpose(order).reshape(cells, -1))


@op("MaxPool")
def max_pool(ctx, x):
    geometry = _pool_geometry(ctx, x)
    if not ctx.has_output(1):
        return _window_reduce(x, _lowest(x.dtype), lax.max, geometry)
    n, c = x.shape[:2]
    in_shape = x.shape[2:]
    out = geometry[4]
    index, valid = _window_table(in_shape, geometry)
    taps = jnp.take(x.reshape(n, c, -1), jnp.asarray(index), axis=2)
    taps = jnp.where(valid, taps, jnp.asarray(_lowest(x.dtype), x.dtype))
    best = jnp.argmax(taps, axis=-1)
    y = jnp.take_along_axis(taps, best[..., None], axis=-1)[..., 0]
    spatial = jnp.asarray(index)[jnp.arange(index.shape[0]), best]
    if ctx.attr("storage_order", 0):
        coords = jnp.unravel_index(spatial, in_shape)
        strides = np.cumprod((1,) + tuple(in_shape[:-1]))
        spatial = sum(coord * int(st) for coord, st in zip(coords, strides))
    plane = jnp.arange(n * c).reshape(n, c, 1) * int(np.prod(in_shape))
    indices = (plane + spatial).astype(_index_dtype())
    return y.reshape(n, c, *out), indices.reshape(n, c, *out)


@op("AveragePool")
def average_pool(ctx, x):
    geometry = _pool_geometry(ctx, x)
    total = _window_reduce(x, 0, lax.add, geometry)
    counts = _window_counts(x.shape[2:], geometry, ctx.attr("count_include_pad", 0))
    return (total / counts.astype(x.dtype)).astype(x.dtype)


@op("LpPool")
def lp_pool(ctx, x):
    p = ctx.attr("p", 2)
    geometry = _pool_geometry(ctx, x)
    return (_window_reduce(jnp.abs(x) ** p, 0, lax.add, geometry) ** (1.0 / p)).astype(x.dtype)


def _spatial_axes(x):
    return tuple(range(2, x.ndim))


@op("GlobalAveragePool")
def global_average_pool(ctx, x):
    return jnp.mean(x, axis=_spatial_axes(x), keepdims=True).astype(x.dtype)


@op("GlobalMaxPool")
def global_max_pool(ctx, x):
    return jnp.max(x, axis=_spatial_axes(x), keepdims=True)


@op("GlobalLpPool")
def global_lp_pool(ctx, x):
    p = ctx.attr("p", 2)
    norm = jnp.sum(jnp.abs(x) ** p, axis=_spatial_axes(x), keepdims=True) ** (1.0 / p)
    return norm.astype(x.dtype)


# -- normalization ----------------------------------------------------------------------------


def _stash_dtype(ctx, x):
    """Computation dtype: float32 for 16-bit floats when ``stash_type`` is FLOAT, else x's."""
    if ctx.attr("stash_type", 1) == 1 and jnp.dtype(x.dtype).itemsize < 4:
        return jnp.float32
    return x.dtype


@op("BatchNormalization")
def batch_normalization(ctx, x, scale, bias, mean, var):
    """Inference normalization, or (``training_mode``, or extra outputs before opset 14) batch
    statistics with running averages ``running * momentum + batch * (1 - momentum)``."""
    eps = ctx.attr("epsilon", 1e-5)
    shape = _channel_shape(x)
    if ctx.opset >= 14:
        training = bool(ctx.attr("training_mode", 0))
    else:
        training = any(ctx.has_output(i) for i in range(1, ctx.num_outputs))
    if not training:
        y = (x - mean.reshape(shape)) / jnp.sqrt(var.reshape(shape) + eps)
        return (y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)
    momentum = ctx.attr("momentum", 0.9)
    axes = (0,) + _spatial_axes(x)
    batch_mean = jnp.mean(x, axis=axes)
    batch_var = jnp.var(x, axis=axes)
    y = (x - batch_mean.reshape(shape)) / jnp.sqrt(batch_var.reshape(shape) + eps)
    y = (y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)
    running_mean = (mean * momentum + batch_mean * (1 - momentum)).astype(mean.dtype)
    running_var = (var * momentum + batch_var * (1 - momentum)).astype(var.dtype)
    if ctx.opset >= 14:
        return y, running_mean, running_var
    return y, running_mean, running_var, batch_mean.astype(x.dtype), batch_var.astype(x.dtype)


@op("InstanceNormalization")
def instance_normalization(ctx, x, scale, bias):
    eps = ctx.attr("epsilon", 1e-5)
    axes = _spatial_axes(x)
    mean = jnp.mean(x, axis=axes, keepdims=True)
    var = jnp.var(x, axis=axes, keepdims=True)
    y = (x - mean) / jnp.sqrt(var + eps)
    shape = _channel_shape(x)
    return (y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)


@op("LayerNormalization")
def layer_normalization(ctx, x, scale, bias=None):
    """Normalizes over axes ``axis..rank-1``; outputs Y, Mean and InvStdDev (keepdims)."""
    axis = ctx.attr("axis", -1)
    eps = ctx.attr("epsilon", 1e-5)
    axes = tuple(range(axis % x.ndim, x.ndim))
    xs = x.astype(_stash_dtype(ctx, x))
    mean = jnp.mean(xs, axis=axes, keepdims=True)
    centered = xs - mean
    inv_std = 1 / jnp.sqrt(jnp.mean(centered * centered, axis=axes, keepdims=True) + eps)
    y = (centered * inv_std).astype(x.dtype) * scale
    if bias is not None:
        y = y + bias
    return y.astype(x.dtype), mean, inv_std


@op("GroupNormalization")
def group_normalization(ctx, x, scale, bias):
    """Statistics per (sample, channel group); scale and bias per channel (opset 21)."""
    groups = ctx.attr("num_groups")
    eps = ctx.attr("epsilon", 1e-5)
    n, c = x.shape[:2]
    if c % groups:
        raise ctx.error(f"{c} channels do not split into {groups} groups")
    xs = x.astype(_stash_dtype(ctx, x)).reshape(n, groups, -1)
    mean = jnp.mean(xs, axis=-1, keepdims=True)
    var = jnp.var(xs, axis=-1, keepdims=True)
    y = ((xs - mean) / jnp.sqrt(var + eps)).reshape(x.shape).astype(x.dtype)
    shape = _channel_shape(x)
    return (y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)


@op("RMSNormalization")
def rms_normalization(ctx, x, scale):
    axis = ctx.attr("axis", -1)
    eps = ctx.attr("epsilon", 1e-5)
    axes = tuple(range(axis % x.ndim, x.ndim))
    xs = x.astype(_stash_dtype(ctx, x))
    inv_rms = 1 / jnp.sqrt(jnp.mean(xs * xs, axis=axes, keepdims=True) + eps)
    return ((xs * inv_rms).astype(x.dtype) * scale).astype(x.dtype)


@op("LpNormalization")
def lp_normalization(ctx, x):
    axis = ctx.attr("axis", -1)
    p = ctx.attr("p", 2)
    if p not in (1, 2):
        raise ctx.error(f"p must be 1 or 2, got {p}")
    ax = jnp.abs(x)
    norm = jnp.sum(ax, axis=axis, keepdims=True) if p == 1 else jnp.sqrt(
        jnp.sum(ax * ax, axis=axis, keepdims=True))
    return jnp.where(norm == 0, 0, x / jnp.where(norm == 0, 1, norm)).astype(x.dtype)


@op("MeanVarianceNormalization")
def mean_variance_normalization(ctx, x):
    """``(X - E[X]) / (sqrt(E[X^2] - E[X]^2) + 1e-9)`` over ``axes`` (default 0, 2, 3)."""
    axes = tuple(ctx.attr("axes", [0, 2, 3]))
    mean = jnp.mean(x, axis=axes, keepdims=True)
    std = jnp.sqrt(jnp.mean(x * x, axis=axes, keepdims=True) - mean * mean)
    return ((x - mean) / (std + 1e-9)).astype(x.dtype)


@op("LRN")
def lrn(ctx, x):
    """``x / (bias + alpha / size * sum of x^2 over the channel window) ** beta``."""
    size = ctx.attr("size")
    alpha = ctx.attr("alpha", 1e-4)
    beta = ctx.attr("beta", 0.75)
    bias = ctx.attr("bias", 1.0)
    before = (size - 1) // 2
    config = [(0, 0), (before, size - 1 - before)] + [(0, 0)] * (x.ndim - 2)
    square_sum = lax.reduce_window(x * x, jnp.asarray(0, x.dtype), lax.add,
                                   (1, size) + (1,) * (x.ndim - 2), (1,) * x.ndim, config)
    return (x / (bias + alpha / size * square_sum) ** beta).astype(x.dtype)


@op("Dropout")
def dropout(ctx, x, ratio=None, training_mode=None):
    """Identity plus an all-true mask; random dropping (training with ratio > 0) is rejected
    because ONNX leaves its random stream unspecified."""
    if ctx.opset >= 12:
        training = training_mode is not None and bool(ctx.static(training_mode, "training_mode"))
        rate = float(ctx.static(ratio, "ratio")) if training and ratio is not None else 0.5
    else:  # opsets 7-11 leave the mode to the runtime (inference); before 7, is_test decides
        training = ctx.opset < 7 and not ctx.attr("is_test", 0)
        rate = ctx.attr("ratio", 0.5)
    if training and rate != 0.0:
        raise ctx.error("training-mode Dropout with a nonzero ratio draws from an "
                        "unspecified random stream; it cannot be lowered")
    mask = jnp.ones(x.shape, dtype=bool if ctx.opset >= 10 else x.dtype)
    return x, mask


# -- losses -----------------------------------------------------------------------------------


def _nll(ctx, log_prob, target, weight):
    """Negative log-likelihood of ``target`` classes along axis 1, with weights/ignore_index."""
    reduction = ctx.attr("reduction", "mean")
    ignore_index = ctx.attr("ignore_index", None)
    valid = jnp.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    safe = jnp.where(valid, target, 0)
    picked = jnp.take_along_axis(log_prob, safe[:, None], axis=1)[:, 0]
    if weight is not None:
        w = jnp.where(valid, jnp.take(weight, safe), 0).astype(log_prob.dtype)
    else:
        w = valid.astype(log_prob.dtype)
    loss = -picked * w
    if reduction == "none":
        return loss.astype(log_prob.dtype)
    if reduction == "sum":
        return jnp.sum(loss).astype(log_prob.dtype)
    if reduction == "mean":
        if weight is None and ignore_index is None:
            return jnp.mean(loss).astype(log_prob.dtype)
        return (jnp.sum(loss) / jnp.sum(w)).astype(log_prob.dtype)
    raise ctx.error(f"unknown reduction {reduction!r}")


@op("NegativeLogLikelihoodLoss")
def negative_log_likelihood_loss(ctx, x, target, weight=None):
    return _nll(ctx, x, target, weight)


@op("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy_loss(ctx, scores, labels, weights=None):
    log_prob = jax.nn.log_softmax(scores, axis=1)
    return _nll(ctx, log_prob, labels, weights), log_prob.astype(scores.dtype)


# -- attention --------------------------------------------------------------------------------


def _heads(x, heads):
    """``(batch, seq, heads * size)`` -> ``(batch, heads, seq, size)``."""
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(0, 2, 1, 3)


def _rounding(dtype):
    """``(compute dtype, round)``: bfloat16 runs in float32 rounded after every step, as numpy
    does per op (XLA would otherwise keep excess precision across fused steps)."""
    if dtype == jnp.bfloat16:
        return jnp.float32, lambda v: lax.reduce_precision(v, 8, 7)
    return dtype, lambda v: v


def _softmax(logits, rnd, sequential):
    """Softmax over the last axis; rows of ``-inf`` give zeros. ``sequential`` sums left to
    right with rounding, numpy's order for bfloat16."""
    top = jnp.max(logits, axis=-1, keepdims=True)
    exp = rnd(jnp.exp(rnd(logits - jnp.where(jnp.isneginf(top), 0, top))))
    if sequential:
        total, _ = lax.scan(lambda acc, v: (rnd(acc + v), None),
                            jnp.zeros(exp.shape[:-1], exp.dtype), jnp.moveaxis(exp, -1, 0))
        total = total[..., None]
    else:
        total = jnp.sum(exp, axis=-1, keepdims=True)
    return rnd(exp / jnp.where(total == 0, 1, total))


@op("Attention")
def attention(ctx, q, k, v, attn_mask=None, past_key=None, past_value=None,
              nonpad_kv_seqlen=None):
    """Scaled dot-product attention (opset 23+): masks, causal / sliding-window frontiers
    offset by the cache length, GQA head sharing, softcap; fully-masked rows give zeros."""
    rank3 = q.ndim == 3
    if rank3:
        q = _heads(q, ctx.attr("q_num_heads"))
        k = _heads(k, ctx.attr("kv_num_heads"))
        v = _heads(v, ctx.attr("kv_num_heads"))
    dtype = q.dtype
    scale = ctx.attr("scale", None)
    if scale is None:
        scale = 1 / np.sqrt(q.shape[-1])
    if past_key is not None:
        k = jnp.concatenate([past_key, k], axis=2)
        v = jnp.concatenate([past_value, v], axis=2)
    present_key, present_value = k, v
    work, rnd = _rounding(dtype)
    q, k, v = q.astype(work), k.astype(work), v.astype(work)
    root = jnp.asarray(np.sqrt(scale), dtype).astype(work)
    q_len, kv_len = q.shape[2], k.shape[2]
    neg_inf = jnp.asarray(-np.inf, work)
    zero = jnp.asarray(0, work)
    bias = jnp.zeros((q_len, kv_len), work)
    if attn_mask is not None:
        pad = kv_len - attn_mask.shape[-1]
        if pad > 0:
            fill = False if attn_mask.dtype == jnp.bool_ else -np.inf
            attn_mask = jnp.pad(attn_mask, [(0, 0)] * (attn_mask.ndim - 1) + [(0, pad)],
                                constant_values=fill)
        if attn_mask.dtype == jnp.bool_:
            attn_mask = jnp.where(attn_mask, zero, neg_inf)
        bias = bias + attn_mask.astype(dtype).astype(work)
    if past_key is not None:
        offset = past_key.shape[2]
    elif nonpad_kv_seqlen is not None:
        offset = (nonpad_kv_seqlen.reshape(-1) - q_len).reshape(-1, 1, 1, 1)
    else:
        offset = 0
    distance = jnp.arange(q_len)[:, None] + offset - jnp.arange(kv_len)[None, :]
    allowed = jnp.ones(distance.shape, bool)
    if ctx.attr("is_causal", 0):
        allowed = allowed & (distance >= 0)
    left = ctx.attr("left_window_size", -1)
    right = ctx.attr("right_window_size", -1)
    if left >= 0:
        allowed = allowed & (distance <= left)
    if right >= 0:
        allowed = allowed & (-distance <= right)
    bias = bias + jnp.where(allowed, zero, neg_inf)
    if nonpad_kv_seqlen is not None:
        padded = jnp.arange(kv_len)[None, :] < nonpad_kv_seqlen.reshape(-1, 1)
        bias = bias + jnp.where(padded, zero, neg_inf)[:, None, None, :]
    if k.shape[1] != q.shape[1]:
        k = jnp.repeat(k, q.shape[1] // k.shape[1], axis=1)
        v = jnp.repeat(v, q.shape[1] // v.shape[1], axis=1)
    qk = rnd(jnp.matmul(rnd(q * root), jnp.swapaxes(rnd(k * root), -1, -2), precision=_HIGHEST))
    softcap = ctx.attr("softcap", 0.0)
    capped = rnd(rnd(jnp.tanh(rnd(qk / softcap))) * softcap) if softcap > 0 else qk
    scores = rnd(capped + bias)
    precision = ctx.attr("softmax_precision", None)
    if precision is None:
        probs = _softmax(scores, rnd, dtype == jnp.bfloat16)
    else:
        soft_dtype = jax_dtype(precision)
        soft_work, soft_rnd = _rounding(soft_dtype)
        probs = _softmax(scores.astype(soft_dtype).astype(soft_work), soft_rnd,
                         soft_dtype == jnp.bfloat16)
    masked_row = jnp.isneginf(jnp.max(bias, axis=-1, keepdims=True))
    probs = jnp.where(masked_row, 0, probs).astype(dtype)
    y = jnp.matmul(probs.astype(work), v, precision=_HIGHEST)
    if rank3:
        y = y.transpose(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], -1)
    mode = ctx.attr("qk_matmul_output_mode", 0)
    qk_out = {0: qk, 1: capped, 2: scores, 3: probs}.get(mode)
    if qk_out is None:
        raise ctx.error(f"unknown qk_matmul_output_mode {mode}")
    return y.astype(dtype), present_key, present_value, qk_out.astype(dtype)


@op("RotaryEmbedding")
def rotary_embedding(ctx, x, cos_cache, sin_cache, position_ids=None):
    """Rotates the first ``rotary_embedding_dim`` features of each head (halves or interleaved
    pairs) by the cached angles of each position."""
    interleaved = ctx.attr("interleaved", 0)
    shape = x.shape
    if x.ndim == 4:
        x = x.transpose(0, 2, 1, 3)
    else:
        x = x.reshape(shape[0], shape[1], ctx.attr("num_heads"), -1)
    dim = ctx.attr("rotary_embedding_dim", 0) or x.shape[-1]
    if position_ids is not None:
        cos_cache = jnp.take(cos_cache, position_ids, axis=0)
        sin_cache = jnp.take(sin_cache, position_ids, axis=0)
    if cos_cache.shape[-1] != dim // 2 or sin_cache.shape[-1] != dim // 2:
        raise ctx.error(f"cos/sin caches must have rotary_embedding_dim/2 = {dim // 2} features")
    cos = cos_cache[:, :, None, :]
    sin = sin_cache[:, :, None, :]
    rotate, keep = x[..., :dim], x[..., dim:]
    if interleaved:
        x1, x2 = rotate[..., 0::2], rotate[..., 1::2]
    else:
        x1, x2 = rotate[..., :dim // 2], rotate[..., dim // 2:]
    real = cos * x1 - sin * x2
    imag = sin * x1 + cos * x2
    if interleaved:
        rotated = jnp.stack([real, imag], axis=-1).reshape(rotate.shape)
    else:
        rotated = jnp.concatenate([real, imag], axis=-1)
    y = jnp.concatenate([rotated, keep], axis=-1).astype(x.dtype)
    return y.transpose(0, 2, 1, 3) if len(shape) == 4 else y.reshape(shape)


@op("SwiGLU")
def swiglu(ctx, a, b):
    """``a * sigmoid(alpha * a) * b``."""
    alpha = ctx.attr("alpha", 1.0)
    return (a * jax.nn.sigmoid(alpha * a).astype(a.dtype) * b).astype(a.dtype)


# -- recurrent networks -----------------------------------------------------------------------

# name -> (fn(x, alpha, beta), default alpha, default beta); None: the parameter is unused.
_ACTIVATIONS = {
    "relu": (lambda x, a, b: jnp.maximum(x, 0), None, None),
    "tanh": (lambda x, a, b: jnp.tanh(x), None, None),
    "sigmoid": (lambda x, a, b: jax.nn.sigmoid(x), None, None),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: jnp.where(x >= 0, x, a * x), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: jnp.where(x > a, x, 0), 1.0, None),
    "scaledtanh": (lambda x, a, b: a * jnp.tanh(b * x), 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: jnp.clip(a * x + b, 0, 1), 0.2, 0.5),
    "elu": (lambda x, a, b: jnp.where(x >= 0, x, a * (jnp.exp(x) - 1)), 1.0, None),
    "softsign": (lambda x, a, b: x / (1 + jnp.abs(x)), None, None),
    "softplus": (lambda x, a, b: jnp.logaddexp(x, 0), None, None),
}


def _activations(ctx, defaults, num_directions):
    """Per direction, the activation functions; alphas/betas are consumed in order by the
    activations that take them."""
    names = ctx.attr("activations", None) or defaults * num_directions
    if len(names) != len(defaults) * num_directions:
        raise ctx.error(f"activations needs {len(defaults) * num_directions} names, got {names}")
    alphas = list(ctx.attr("activation_alpha", None) or [])
    betas = list(ctx.attr("activation_beta", None) or [])
    fns = []
    for name in names:
        if name.lower() not in _ACTIVATIONS:
            raise ctx.error(f"unknown activation {name!r}")
        fn, alpha, beta = _ACTIVATIONS[name.lower()]
        if alpha is not None and alphas:
            alpha = alphas.pop(0)
        if beta is not None and betas:
            beta = betas.pop(0)
        fns.append(lambda x, fn=fn, alpha=alpha, beta=beta: fn(x, alpha, beta))
    n = len(defaults)
    return [fns[d * n:(d + 1) * n] for d in range(num_directions)]


def _recurrent(ctx, default_acts, x, w, r, b, sequence_lens, initial, cell):
    """Shared driver: layout, directions, ``sequence_lens`` masking and the time scan.

    ``cell(direction, acts, carry, xw_t)`` returns the new state tuple (hidden state first);
    ``xw_t`` is the input projection plus input bias for one step. Returns ``Y`` and the final
    states, each in the node's layout.
    """
    direction = ctx.attr("direction", "forward")
    num_dir = 2 if direction == "bidirectional" else 1
    if direction not in ("forward", "reverse", "bidirectional") or w.shape[0] != num_dir:
        raise ctx.error(f"direction {direction!r} does not match W with {w.shape[0]} directions")
    layout = ctx.attr("layout", 0)
    if layout:
        x = x.swapaxes(0, 1)
        initial = [None if s is None else s.swapaxes(0, 1) for s in initial]
    steps, batch = x.shape[:2]
    hidden = r.shape[-1]
    if ctx.attr("hidden_size", hidden) != hidden:
        raise ctx.error(f"hidden_size {ctx.attr('hidden_size')} disagrees with R {r.shape}")
    gates = w.shape[1] // hidden
    initial = [jnp.zeros((num_dir, batch, hidden), x.dtype) if s is None else s for s in initial]
    acts = _activations(ctx, default_acts, num_dir)
    lens = (jnp.full((batch,), steps, jnp.int32) if sequence_lens is None
            else sequence_lens.astype(jnp.int32))
    t = jnp.arange(steps)[:, None]
    valid = t < lens[None, :]
    reverse_index = jnp.where(valid, lens[None, :] - 1 - t, t)[:, :, None]
    ys, finals = [], []
    for d in range(num_dir):
        reverse = direction == "reverse" or d == 1
        xs = jnp.take_along_axis(x, reverse_index, axis=0) if reverse else x
        xw = jnp.matmul(xs, w[d].T, precision=_HIGHEST) + b[d, :gates * hidden]

        def step(carry, inputs, d=d):
            xw_t, keep = inputs
            new = cell(d, acts[d], carry, xw_t)
            keep = keep[:, None]
            carry = tuple(jnp.where(keep, n, c) for n, c in zip(new, carry))
            return carry, jnp.where(keep, new[0], 0)

        final, y = lax.scan(step, tuple(s[d] for s in initial), (xw, valid))
        if reverse:
            y = jnp.take_along_axis(y, reverse_index, axis=0)
        ys.append(y)
        finals.append(final)
    y = jnp.stack(ys, axis=1).astype(x.dtype)
    states = [jnp.stack([f[i] for f in finals]).astype(x.dtype) for i in range(len(initial))]
    if layout:
        y = y.transpose(2, 0, 1, 3)
        states = [s.swapaxes(0, 1) for s in states]
    return (y, *states)


def _clip(ctx):
    threshold = ctx.attr("clip", None)
    if threshold is None:
        return lambda v: v
    return lambda v: jnp.clip(v, -threshold, threshold)


@op("RNN")
def rnn(ctx, x, w, r, b=None, sequence_lens=None, initial_h=None):
    clip = _clip(ctx)
    hidden = r.shape[-1]
    if b is None:
        b = jnp.zeros((w.shape[0], 2 * hidden), x.dtype)

    def cell(d, acts, carry, xw_t):
        (h,) = carry
        pre = xw_t + jnp.matmul(h, r[d].T, precision=_HIGHEST) + b[d, hidden:]
        return (acts[0](clip(pre)),)

    return _recurrent(ctx, ["Tanh"], x, w, r, b, sequence_lens, [initial_h], cell)


@op("GRU")
def gru(ctx, x, w, r, b=None, sequence_lens=None, initial_h=None):
    clip = _clip(ctx)
    hidden = r.shape[-1]
    linear_before_reset = ctx.attr("linear_before_reset", 0)
    if b is None:
        b = jnp.zeros((w.shape[0], 6 * hidden), x.dtype)

    def cell(d, acts, carry, xw_t):
        (h,) = carry
        f, g = acts
        rb = b[d, 3 * hidden:]
        hr = jnp.matmul(h, r[d, :2 * hidden].T, precision=_HIGHEST) + rb[:2 * hidden]
        z = f(clip(xw_t[:, :hidden] + hr[:, :hidden]))
        reset = f(clip(xw_t[:, hidden:2 * hidden] + hr[:, hidden:]))
        r_h = r[d, 2 * hidden:].T
        if linear_before_reset:
            pre = xw_t[:, 2 * hidden:] + reset * (jnp.matmul(h, r_h, precision=_HIGHEST)
                                                  + rb[2 * hidden:])
        else:
            pre = xw_t[:, 2 * hidden:] + jnp.matmul(reset * h, r_h, precision=_HIGHEST) \
                + rb[2 * hidden:]
        candidate = g(clip(pre))
        return ((1 - z) * candidate + z * h,)

    return _recurrent(ctx, ["Sigmoid", "Tanh"], x, w, r, b, sequence_lens, [initial_h], cell)


@op("LSTM")
def lstm(ctx, x, w, r, b=None, sequence_lens=None, initial_h=None, initial_c=None, p=None):
    """Gates in ONNX order (i, o, f, c); peepholes ``P`` in order (i, o, f)."""
    clip = _clip(ctx)
    hidden = r.shape[-1]
    input_forget = ctx.attr("input_forget", 0)
    if b is None:
        b = jnp.zeros((w.shape[0], 8 * hidden), x.dtype)
    if p is None:
        p = jnp.zeros((w.shape[0], 3 * hidden), x.dtype)

    def cell(d, acts, carry, xw_t):
        h, c = carry
        f, g, act_h = acts
        pre = xw_t + jnp.matmul(h, r[d].T, precision=_HIGHEST) + b[d, 4 * hidden:]
        pi, po, pf = p[d, :hidden], p[d, hidden:2 * hidden], p[d, 2 * hidden:]
        i = f(clip(pre[:, :hidden] + pi * c))
        forget = 1 - i if input_forget else f(clip(pre[:, 2 * hidden:3 * hidden] + pf * c))
        c_new = forget * c + i * g(clip(pre[:, 3 * hidden:]))
        o = f(clip(pre[:, hidden:2 * hidden] + po * c_new))
        return o * act_h(c_new), c_new

    return _recurrent(ctx, ["Sigmoid", "Tanh", "Tanh"], x, w, r, b, sequence_lens,
                      [initial_h, initial_c], cell)


# -- resizing and image ops -------------------------------------------------------------------


def _source_coords(mode, out_size, in_size, scale, roi):
    """Input coordinate of each output index and, for tf_crop_and_resize, which extrapolate."""
    y = np.arange(out_size, dtype=np.float64)
    length = scale * in_size
    extrapolated = None
    if mode == "align_corners":
        x = np.zeros(out_size) if length == 1 else y * (in_size - 1) / (length - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_crop_and_resize":
        start, end = roi
        if length == 1:
            x = np.full(out_size, (end - start) * (in_size - 1) / 2)
        else:
            x = y * (end - start) * (in_size - 1) / (length - 1)
        x = x + start * (in_size - 1)
        extrapolated = (x < 0) | (x > in_size - 1)
    elif mode == "pytorch_half_pixel":
        x = np.full(out_size, -0.5) if length == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        offset = in_size / 2 * (1 - out_size / length)
        x = offset + (y + 0.5) / scale - 0.5
    else:
        raise ValueError(f"unknown coordinate_transformation_mode {mode!r}")
    return x, extrapolated


def _nearest_coeffs(ratio, rule):
    if float(ratio).is_integer():
        return [0.0, 1.0]
    up = {"round_prefer_floor": ratio > 0.5, "round_prefer_ceil": ratio >= 0.5, "floor": False,
          "ceil": True}[rule]
    return [float(not up), float(up)]


def _linear_coeffs(ratio, scale, antialias):
    if not antialias:
        return [1 - ratio, ratio]
    scale = min(scale, 1.0)
    start = int(np.floor(-1 / scale) + 1)
    args = (np.arange(start, 2 - start) - ratio) * scale
    coeffs = np.clip(1 - np.abs(args), 0, 1)
    return coeffs / coeffs.sum()


def _cubic_coeffs(ratio, scale, antialias, a):
    if not antialias:
        return [((a * (ratio + 1) - 5 * a) * (ratio + 1) + 8 * a) * (ratio + 1) - 4 * a,
                ((a + 2) * ratio - (a + 3)) * ratio * ratio + 1,
                ((a + 2) * (1 - ratio) - (a + 3)) * (1 - ratio) * (1 - ratio) + 1,
                ((a * (2 - ratio) - 5 * a) * (2 - ratio) + 8 * a) * (2 - ratio) - 4 * a]
    scale = min(scale, 1.0)
    start = int(np.floor(-2 / scale) + 1)
    t = np.abs(scale * (np.arange(start, 2 - start) - ratio))
    coeffs = np.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                      np.where(t < 2, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a, 0.0))
    return coeffs / coeffs.sum()


def _resize_taps(coeff_fn, coord_mode, exclude_outside, in_size, out_size, scale, roi):
    """Per output index: ``n`` input indices, their weights, and the extrapolation flags."""
    x, extrapolated = _source_coords(coord_mode, out_size, in_size, scale, roi)
    floor = np.floor(x)
    ratios = np.where(x == floor, 1.0, x - floor)
    coeffs = np.array([coeff_fn(float(ratio), scale) for ratio in ratios], dtype=np.float64)
    n = coeffs.shape[1]
    pad = int(np.ceil(n / 2))
    frac = x + pad - np.floor(x + pad)
    if n % 2 == 0:
        start = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        start = np.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
    index = (np.floor(x + pad).astype(np.int64) + start)[:, None] + np.arange(n)[None, :] - pad
    if exclude_outside:
        coeffs = np.where((index < 0) | (index >= in_size), 0.0, coeffs)
        total = coeffs.sum(axis=-1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    return np.clip(index, 0, in_size - 1), coeffs, extrapolated


def _resize_axis(x, axis, index, coeffs, extrapolated, extrapolation_value, nearest):
    out = index.shape[0]
    if nearest:
        y = jnp.take(x, jnp.asarray(index[np.arange(out), np.argmax(coeffs, axis=1)]), axis=axis)
    else:
        taps = jnp.take(x, jnp.asarray(index.reshape(-1)), axis=axis)
        taps = taps.reshape(x.shape[:axis] + index.shape + x.shape[axis + 1:])
        weights = coeffs.reshape((1,) * axis + coeffs.shape + (1,) * (x.ndim - axis - 1))
        y = jnp.sum(taps * jnp.asarray(weights, x.dtype), axis=axis + 1)
    if extrapolated is not None and extrapolated.any():
        flags = extrapolated.reshape((1,) * axis + (out,) + (1,) * (x.ndim - axis - 1))
        y = jnp.where(flags, jnp.asarray(extrapolation_value, y.dtype), y)
    return y


def _present(ctx, value, what):
    """A static optional input, or None when it is absent or empty."""
    if value is None:
        return None
    value = ctx.static(value, what)
    return value if value.size else None


@op("Resize")
def resize(ctx, x, roi=None, scales=None, sizes=None):
    """Separable per-axis resampling (nearest / linear / cubic, antialias), matching ONNX's
    coordinate transformations; output sizes, scales and roi must be static."""
    if ctx.opset < 11:
        roi, scales, sizes = None, roi, None
        coord_mode = "asymmetric"
    else:
        coord_mode = ctx.attr("coordinate_transformation_mode", "half_pixel")
    rank = x.ndim
    axes = [a % rank for a in (ctx.attr("axes", None) or range(rank))]
    roi = _present(ctx, roi, "roi") if coord_mode == "tf_crop_and_resize" else None
    scales = _present(ctx, scales, "scales")
    sizes = _present(ctx, sizes, "sizes")
    full_roi = [(0.0, 1.0)] * rank
    if roi is not None:
        for i, a in enumerate(axes):
            full_roi[a] = (float(roi[i]), float(roi[len(axes) + i]))
    scale = [1.0] * rank
    out = list(x.shape)
    if sizes is not None:
        for a, s in zip(axes, sizes):
            out[a] = int(s)
            scale[a] = int(s) / x.shape[a]
        policy = ctx.attr("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            pick = {"not_larger": min, "not_smaller": max}[policy]
            common = pick(scale[a] for a in axes)
            for a in axes:
                scale[a] = common
                out[a] = int(common * x.shape[a] + 0.5)
    elif scales is not None:
        for a, s in zip(axes, scales):
            scale[a] = float(s)
            out[a] = int(float(s) * x.shape[a])
    else:
        raise ctx.error("Resize needs scales or sizes")
    mode = ctx.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        raise ctx.error(f"unknown mode {mode!r}")
    antialias = ctx.attr("antialias", 0)
    cubic_a = ctx.attr("cubic_coeff_a", -0.75)
    # before opset 11 nearest is "simple": floor when upsampling, ceil when downsampling
    nearest_mode = ctx.attr("nearest_mode", "round_prefer_floor") if ctx.opset >= 11 else None

    def coeff_fn(ratio, s):
        if mode == "nearest":
            return _nearest_coeffs(ratio, nearest_mode or ("ceil" if s < 1 else "floor"))
        if mode == "linear":
            return _linear_coeffs(ratio, s, antialias)
        return _cubic_coeffs(ratio, s, antialias, cubic_a)

    nearest = mode == "nearest"
    if nearest or jnp.issubdtype(x.dtype, jnp.floating):
        y = x
    else:  # integers interpolate in the widest float, then round and saturate
        y = x.astype(jax.dtypes.canonicalize_dtype(np.float64))
    for a in axes:
        if math.isclose(scale[a], 1.0) and out[a] == x.shape[a] and full_roi[a] == (0.0, 1.0):
            continue
        index, coeffs, extrapolated = _resize_taps(
            coeff_fn, coord_mode, ctx.attr("exclude_outside", 0), x.shape[a], out[a], scale[a],
            full_roi[a])
        y = _resize_axis(y, a, index, coeffs, extrapolated,
                         ctx.attr("extrapolation_value", 0.0), nearest)
    if y.dtype != x.dtype:
        info = jnp.iinfo(x.dtype)
        y = jnp.clip(jnp.round(y), info.min, info.max)
    return y.astype(x.dtype)


@op("Col2Im")
def col2im(ctx, x, image_shape, block_shape):
    """Scatter-adds sliding blocks ``(N, C * prod(block), L)`` back into ``(N, C, *image)``."""
    image = ctx.static_ints(image_shape, "image_shape")
    block = ctx.static_ints(block_shape, "block_shape")
    n = len(image)
    strides = list(ctx.attr("strides", None) or [1] * n)
    dilations = list(ctx.attr("dilations", None) or [1] * n)
    pads = _explicit_pads(ctx, n)
    counts = [(size + lo + hi - (k - 1) * d - 1) // s + 1
              for size, k, s, d, (lo, hi) in zip(image, block, strides, dilations, pads)]
    kernel_size = int(np.prod(block))
    if x.shape[1] % kernel_size or x.shape[2] != int(np.prod(counts)):
        raise ctx.error(f"input {tuple(x.shape)} does not hold {counts} blocks of {block}")
    index = np.zeros((), dtype=np.int64)
    valid = np.ones((), dtype=bool)
    for size, k, s, d, (lo, _), c in zip(image, block, strides, dilations, pads, counts):
        pos = np.arange(k)[:, None] * d + np.arange(c)[None, :] * s - lo  # (kernel, block)
        index = np.multiply.outer(index * size, np.ones_like(pos)) + np.clip(pos, 0, size - 1)
        valid = np.logical_and.outer(valid, (pos >= 0) & (pos < size))
    order = list(range(0, 2 * n, 2)) + list(range(1, 2 * n, 2))  # (kernel..., block...)
    index = index.transpose(order).reshape(-1)
    valid = valid.transpose(order).reshape(-1)
    batch, channels = x.shape[0], x.shape[1] // kernel_size
    data = x.reshape(batch, channels, -1)[:, :, np.flatnonzero(valid)]
    y = jnp.zeros((batch, channels, int(np.prod(image))), x.dtype)
    y = y.at[:, :, index[valid]].add(data)
    return y.reshape(batch, channels, *image)


def _window(ctx, size, fn):
    n = int(ctx.static(size, "size"))
    denominator = n if ctx.attr("periodic", 1) else n - 1
    w = fn(np.arange(n, dtype=np.float64) * (2 * np.pi / denominator))
    return jnp.asarray(w, jax_dtype(ctx.attr("output_datatype", 1)))


@op("HannWindow")
def hann_window(ctx, size):
    return _window(ctx, size, lambda t: 0.5 - 0.5 * np.cos(t))


@op("HammingWindow")
def hamming_window(ctx, size):
    return _window(ctx, size, lambda t: 25 / 46 - 21 / 46 * np.cos(t))


@op("BlackmanWindow")
def blackman_window(ctx, size):
    return _window(ctx, size, lambda t: 0.42 - 0.5 * np.cos(t) + 0.08 * np.cos(2 * t))
