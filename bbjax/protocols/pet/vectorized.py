"""PET masking for a whole cohort at once: jitted JAX, bit-identical to the exact reference.

:class:`VectorizedMasker` masks, derives masks for and aggregates ``N`` participants' models
in one program each, for every mask config pair whose group orders lie in ``(2**32,
2**64)`` (F32, I32 and I64 data with bounds B0, B2, B4; :func:`supports` tells). Numbers
are :class:`~bbjax.protocols.pet.limbs.U64` limbs (two uint32 arrays), so nothing needs
``jax_enable_x64``. A cohort's masked models are ``U64`` arrays [N, L + 1]: the ``L``
vector elements, then the unit (the masked scalar) in the last column, the order of a
:class:`MaskObject`'s bytes. Other configs belong to the exact :class:`Masker`.

Inputs are read exactly as :class:`Masker` reads them: float32 weights for F32 data (other
floats are rounded to float32 first), int32-range integers for I32/I64 data, and float32
scalars, each as the exact rational it stands for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bbjax.errors import AggregationError, MaskingError
from bbjax.protocols.pet import fixed_point, limbs, rejection
from bbjax.protocols.pet.chacha20 import SEED_WORDS, seed_words
from bbjax.protocols.pet.config import DataType, MaskConfigPair
from bbjax.protocols.pet.fixed_point import FixedPoint
from bbjax.protocols.pet.limbs import U64
from bbjax.protocols.pet.object import MaskObject, MaskUnit, MaskVect
from bbjax.protocols.pet.rejection import Draw
from bbjax.protocols.pet.seed import MaskSeed
from kernels.masked_sum import modular_sum

MAX_LENGTH = 2**24  # outputs and candidate indices stay int32; keystreams below 2**32 words
_BUDGET = 2**23  # elements of one [N, chunk] array of the block scan, at most
#: XLA options of the masking programs: their keystream loops are integer-SIMD bound, and on
#: CPUs with AVX-512 512-bit vectors run them ~1.5x faster than XLA's default preference of
#: 256 bits (other CPUs keep their widest).
COMPILER_OPTIONS = {"xla_cpu_prefer_vector_width": 512}


class DeviceConfig(NamedTuple):
    """A config pair's constants as array leaves: one compiled program serves all pairs."""

    vect_draw: Draw
    unit_draw: Draw
    vect: FixedPoint
    unit: FixedPoint


def supports(config: MaskConfigPair) -> bool:
    """Whether :class:`VectorizedMasker` handles ``config`` (both orders in (2**32, 2**64))."""
    return all(2**32 < c.order < 2**64 for c in (config.vect, config.unit))


def device_config(config: MaskConfigPair) -> DeviceConfig:
    """The constants of ``config``; a :class:`MaskingError` if it is not :func:`supports`-ed."""
    if not isinstance(config, MaskConfigPair):
        raise MaskingError(f"mask config: expected a MaskConfigPair, got {type(config).__name__}")
    if not supports(config):
        raise MaskingError(
            f"mask config {config}: the vectorized masker needs group orders in (2**32, 2**64), "
            f"got {config.vect.order} and {config.unit.order}; use the exact Masker"
        )
    return DeviceConfig(rejection.draw(config.vect.order), rejection.draw(config.unit.order),
                        fixed_point.fixed_point(config.vect), fixed_point.fixed_point(config.unit))


def derive_limbs(dc: DeviceConfig, keys: jax.Array, *, length: int, chunk_blocks: int) -> U64:
    """The masks of seeds with ChaCha20 key words ``keys`` (uint32[N, 8]): U64 [N, length
    + 1], as ``MaskSeed.derive_mask``. A pure function of array arguments (``length`` and
    ``chunk_blocks``, the keystream blocks a scan step covers per participant, static):
    jit it, or call it inside a jitted program; :class:`VectorizedMasker` jits it with
    :data:`COMPILER_OPTIONS`."""
    return rejection.sample(keys, dc.vect_draw, dc.unit_draw, length, chunk_blocks)


def mask_limbs(dc: DeviceConfig, keys: jax.Array, scalars: jax.Array, weights: jax.Array, *,
               length: int, chunk_blocks: int, integer: bool) -> U64:
    """Masked models U64 [N, length + 1] of scalars (float32[N], finite, >= 0) and weights
    ([N, length], finite float32, or int32 when ``integer``) under the seeds' masks, as
    ``Masker.mask``; pure, like :func:`derive_limbs` (``integer`` static too)."""
    m_s, e_s = fixed_point.clamped_scalar(scalars, dc.unit)
    negative, m_w, e_w = (fixed_point.int_parts if integer else fixed_point.float_parts)(weights)
    n = keys.shape[0]

    def finish(r: U64, is_unit: jax.Array) -> U64:
        # the unit column encodes the scalar itself: a product with weight 1
        neg = jnp.concatenate([negative, jnp.zeros((n, 1), bool)], axis=1)
        m = jnp.concatenate([m_w, jnp.ones((n, 1), jnp.uint32)], axis=1)
        e = jnp.concatenate([e_w, jnp.zeros((n, 1), jnp.int32)], axis=1)
        fp = jax.tree.map(lambda u, v: jnp.where(is_unit, u, v), dc.unit, dc.vect)
        shifted = fixed_point.encode(neg, m_s[:, None], e_s[:, None], m, e, fp)
        order = limbs.where(is_unit, dc.unit_draw.order, dc.vect_draw.order)
        return limbs.add_mod(shifted, r, order)

    return rejection.sample(keys, dc.vect_draw, dc.unit_draw, length, chunk_blocks, finish)


def aggregate_limbs(masked: U64, orders: U64) -> U64:
    """The modular sum over participants of ``masked`` (U64 [N, M]) with per-element
    ``orders`` (U64 [M]), through :func:`kernels.masked_sum.modular_sum`; pure."""
    return U64(*modular_sum(masked.lo, masked.hi, orders.lo, orders.hi))


# the programs VectorizedMasker runs; compiler options are for top-level jits only
derive_program = jax.jit(derive_limbs, static_argnames=("length", "chunk_blocks"),
                         compiler_options=COMPILER_OPTIONS)
mask_program = jax.jit(mask_limbs, static_argnames=("length", "chunk_blocks", "integer"),
                       compiler_options=COMPILER_OPTIONS)
aggregate_program = jax.jit(aggregate_limbs)


class VectorizedMasker:
    """Masks, derives and aggregates whole cohorts under one config pair and model length.

    ``chunk_blocks`` (keystream blocks each participant's scan covers per step; by
    default enough for the whole mask but at most ~2**23 blocks for the cohort) tunes
    memory and loop steps only.
    """

    def __init__(self, config: MaskConfigPair, length: int, *, chunk_blocks: int | None = None):
        self.device = device_config(config)
        if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= MAX_LENGTH:
            raise MaskingError(f"length must be an int in [0, {MAX_LENGTH}], got {length!r}")
        if chunk_blocks is not None and (isinstance(chunk_blocks, bool)
                                         or not isinstance(chunk_blocks, int) or chunk_blocks < 1):
            raise MaskingError(f"chunk_blocks must be a positive int, got {chunk_blocks!r}")
        self.config = config
        self.length = length
        self._chunk_blocks = chunk_blocks
        q, q1 = config.vect.order, config.unit.order
        self.orders = limbs.u64_from_ints([q] * length + [q1])

    def _steps(self, n: int) -> dict[str, int]:
        whole = (rejection.blocks_for(self.length, rejection.acceptance(self.config.vect.order))
                 + rejection.blocks_for(1, rejection.acceptance(self.config.unit.order)))
        chunk = self._chunk_blocks or min(whole, max(_BUDGET // n, 64))
        return {"length": self.length, "chunk_blocks": chunk}

    def derive(self, seeds: Sequence[MaskSeed | bytes] | np.ndarray | jax.Array) -> U64:
        """The masks of ``N`` seeds (MaskSeeds, 32-byte strings, uint8[N, 32] or ChaCha20
        key words uint32[N, 8]): U64 [N, length + 1], each row ``seed.derive_mask``."""
        keys = _keys(seeds)
        return derive_program(self.device, keys, **self._steps(keys.shape[0]))

    def mask(self, seeds: Sequence[MaskSeed | bytes] | np.ndarray | jax.Array,
             scalars: Sequence[float] | np.ndarray | jax.Array,
             weights: np.ndarray | jax.Array, *, bounded: bool = False) -> U64:
        """Masked models U64 [N, length + 1]: row ``i`` is ``Masker.mask(scalars[i],
        weights[i], seed=seeds[i], bounded=bounded)``. Non-finite float weights raise
        :class:`MaskingError` unless ``bounded`` (NaN -> 0, +-inf -> +-float32 max)."""
        keys = _keys(seeds)
        n = keys.shape[0]
        s = _scalars(scalars, n)
        w, integer = self._weights(weights, n, bounded)
        return mask_program(self.device, keys, s, w, integer=integer, **self._steps(n))

    def _weights(self, weights, n: int, bounded: bool) -> tuple[jax.Array, bool]:
        arr = weights if isinstance(weights, jax.Array) else np.asarray(weights)
        if arr.shape != (n, self.length) or arr.dtype.kind not in "iuf":
            raise MaskingError(f"weights: expected numbers of shape ({n}, {self.length}), got "
                               f"{arr.dtype}{list(arr.shape)}")
        if self.config.vect.data_type in (DataType.I32, DataType.I64):
            if arr.dtype == np.int32:
                return jnp.asarray(arr), True
            wide = np.asarray(arr)
            if wide.size and not (np.all(np.floor(wide) == wide) and wide.min() >= -2**31
                                  and wide.max() < 2**31):
                raise MaskingError(
                    f"weights: the vectorized masker takes {self.config.vect.data_type.value} "
                    "weights that are integers in the int32 range (use the exact Masker)")
            return jnp.asarray(wide.astype(np.int32)), True
        with np.errstate(over="ignore"):
            w = arr.astype(jnp.float32) if isinstance(arr, jax.Array) else jnp.asarray(
                arr.astype(np.float32))
        if bounded:
            top = np.finfo(np.float32).max
            return jnp.nan_to_num(w, nan=0.0, posinf=top, neginf=-top), False
        bad = ~jnp.isfinite(w)
        if bool(bad.any()):
            i, j = np.argwhere(np.asarray(bad))[0]
            raise MaskingError(f"weights[{i}, {j}] = {float(w[i, j])!r} is not finite as F32 "
                               "(pass bounded=True to clamp non-finite weights)")
        return w, False

    def aggregate(self, masked: U64) -> U64:
        """The modular sum of ``N`` masked models or masks (U64 [N, length + 1]): U64
        [length + 1], as aggregating them one by one in an ``Aggregation``. Raises
        :class:`AggregationError` for a bad shape, an element outside its group or more
        models than the configs allow."""
        if not isinstance(masked, U64):
            raise AggregationError(f"InvalidObject: expected U64 limbs, got {type(masked).__name__}")
        lo, hi = jnp.asarray(masked.lo), jnp.asarray(masked.hi)
        n = lo.shape[0] if lo.ndim == 2 else 0
        if lo.shape != (n, self.length + 1) or hi.shape != lo.shape or n == 0:
            raise AggregationError(
                f"ModelMismatch: expected limbs of shape (N >= 1, {self.length + 1}), got "
                f"{lo.shape} and {hi.shape}")
        if lo.dtype != jnp.uint32 or hi.dtype != jnp.uint32:
            raise AggregationError(f"InvalidObject: limbs must be uint32, got {lo.dtype}, {hi.dtype}")
        limit = min(self.config.vect.max_nb_models, self.config.unit.max_nb_models)
        if n > limit:
            raise AggregationError(f"TooManyModels: {n} models, the configs allow {limit}")
        orders = U64(*(jnp.asarray(v) for v in self.orders))
        if not bool(limbs.less(U64(lo, hi), orders).all()):
            raise AggregationError("InvalidObject: an element is not below its group order")
        return aggregate_program(U64(lo, hi), orders)

    def to_mask_objects(self, x: U64) -> list[MaskObject]:
        """Rows of U64 [N, length + 1] as ``N`` :class:`MaskObject`s."""
        values = limbs.u64_to_uint64(x)
        if values.ndim != 2 or values.shape[1] != self.length + 1:
            raise MaskingError(f"expected limbs of shape (N, {self.length + 1}), got {values.shape}")
        return [MaskObject(MaskVect(self.config.vect, tuple(row[:-1])), MaskUnit(self.config.unit, row[-1]))
                for row in values.tolist()]

    def to_mask_object(self, x: U64) -> MaskObject:
        """One U64 [length + 1] (an aggregate, say) as a :class:`MaskObject`."""
        (obj,) = self.to_mask_objects(U64(*(np.asarray(v)[None] for v in x)))
        return obj

    def from_mask_objects(self, objects: Sequence[MaskObject]) -> U64:
        """:class:`MaskObject`s of this config and length as numpy U64 [N, length + 1];
        :class:`AggregationError` for one that does not fit or is not valid."""
        rows = []
        for i, obj in enumerate(objects):
            if not isinstance(obj, MaskObject):
                raise AggregationError(f"objects[{i}]: expected a MaskObject, got {type(obj).__name__}")
            if obj.config != self.config or len(obj.vect.data) != self.length:
                raise AggregationError(
                    f"objects[{i}]: config {obj.config} with {len(obj.vect.data)} elements does "
                    f"not fit {self.config} with {self.length}")
            if not obj.is_valid():
                raise AggregationError(f"objects[{i}]: an element is not below its group order")
            rows.append([*obj.vect.data, obj.unit.value])
        return limbs.u64_from_ints(np.array(rows, dtype=object).reshape(len(rows), self.length + 1))

    def from_mask_object(self, obj: MaskObject) -> U64:
        """One :class:`MaskObject` as numpy U64 [length + 1]."""
        x = self.from_mask_objects([obj])
        return U64(x.lo[0], x.hi[0])


def _keys(seeds) -> jax.Array:
    if isinstance(seeds, (np.ndarray, jax.Array)) and seeds.dtype == np.uint32:
        if seeds.ndim != 2 or seeds.shape[1] != SEED_WORDS:
            raise MaskingError(f"seed words: expected uint32[N, 8], got shape {seeds.shape}")
        keys = jnp.asarray(seeds)
    else:
        keys = jnp.asarray(seed_words(seeds if isinstance(seeds, np.ndarray) else list(seeds)))
    if keys.shape[0] == 0:
        raise MaskingError("seeds: expected at least one seed")
    return keys


def _scalars(scalars, n: int) -> jax.Array:
    arr = scalars if isinstance(scalars, jax.Array) else np.asarray(scalars)
    if arr.shape != (n,) or arr.dtype.kind not in "iuf":
        raise MaskingError(f"scalars: expected {n} real numbers, got {arr.dtype}{list(arr.shape)}")
    s = arr.astype(jnp.float32) if isinstance(arr, jax.Array) else jnp.asarray(arr.astype(np.float32))
    bad = ~(jnp.isfinite(s) & (s >= 0))
    if bool(bad.any()):
        i = int(np.argmax(np.asarray(bad)))
        raise MaskingError(f"scalars[{i}] = {float(s[i])!r}: a scalar must be finite and non-negative")
    return s
