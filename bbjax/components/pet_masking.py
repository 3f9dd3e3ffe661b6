"""A PET masking slot: xaynet's masking, aggregation and unmasking of a pytree inside a round.

``pet_masking(template, config)`` is a Protocol component for the three roles of a PET
round, each a pure method over uint32 limbs (:mod:`bbjax.protocols.pet.vectorized`,
bit-identical to the exact :class:`~bbjax.protocols.pet.masking.Masker`), so it runs jitted
and vmapped over a cohort:

* ``mask(values, scalar) -> (masked, seed, fits)`` on an update participant: a fresh mask
  seed (uint32[8], drawn from the slot state's key) and the masked model of ``scalar *
  values`` (the ``M`` flattened leaves of ``values``, float32, then the scalar: ``(lo,
  hi)`` uint32[M + 1]). ``fits`` is False when a value or the scalar is not finite, the
  scalar is negative or above the unit bound ``B1``, or some ``|scalar * value|`` (in
  float32) exceeds the vector bound ``B``: masking would clamp it. Such a participant masks
  zeros and must be left out.
* ``mask_sum(seeds, included) -> mask``: what sum participants compute from the seeds alone,
  the modular sum of the masks of the ``included`` seeds ([k, 8], [k]).
* ``aggregate(masked, included) -> total``: what the server computes from masked models
  alone, their modular sum over the ``included`` rows.
* ``unmask(total, mask, count) -> (values, scalar_sum, ok)``: ``count`` aggregated models
  unmasked, ``sum_j s_j v_j / sum_j s_j`` shaped like ``template`` and ``sum_j s_j``; ``ok``
  is False (and the values 0) when ``count`` is 0 or the scalar sum is not positive.

Masks and masked models come from :func:`~bbjax.protocols.pet.vectorized.mask_limbs` and
:func:`~bbjax.protocols.pet.vectorized.derive_limbs`; the modular sums are one variadic
``lax.reduce`` over the rows, so the cohort may be a symbolic dimension when the round is
exported. Unmasking subtracts the mask and the offset ``count * B * E`` exactly in limbs, then
divides in float32, so the weighted mean is exact up to the fixed-point floors (below
``count / E`` in ``sum_j s_j v_j`` and ``count / E1`` in the scalar sum) and float32
rounding (a few units in the last place). Summing more than the configs' ``max_nb_models``
rows is an :class:`~bbjax.errors.AggregationError` when the round is traced.

Compile a Module with this slot left opaque (``Compiler(inline=[...])`` naming the other
slots): its methods should run as the JAX they are, not through the ONNX round trip.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from bbjax.components.component import Component, PyTree
from bbjax.components.roles import Role
from bbjax.components.tree_checks import cast_like, spec_of
from bbjax.errors import AggregationError, ComponentError
from bbjax.protocols.pet import limbs, rejection, vectorized
from bbjax.protocols.pet.config import DataType, MaskConfig, MaskConfigPair
from bbjax.protocols.pet.limbs import U64

DEFAULT_MASK_CONFIG = MaskConfigPair(MaskConfig("Prime", "F32", "B2", "M3"),
                                     MaskConfig("Prime", "F32", "B0", "M3"))
"""Values ``scalar * v`` in ``[-100, 100]``, scalars in ``[0, 1]``, at most 1000 models,
precision ``E = E1 = 10**10``."""

CHUNK_BLOCKS = 4096
"""Keystream blocks one participant's mask derivation scans per step, at most."""

Limbs = tuple[jax.Array, jax.Array]


@struct.dataclass
class PetMaskingState:
    """The key the participant's mask seeds are drawn from."""

    key: jax.Array


def pet_masking(template: PyTree, config: MaskConfigPair | MaskConfig = DEFAULT_MASK_CONFIG,
                name: str = "pet_masking") -> Component:
    """A Protocol masking pytrees shaped like ``template`` (float leaves) under ``config``
    (a pair, or one config for both parts; F32 data with group orders in ``(2**32,
    2**64)``, see :func:`bbjax.protocols.pet.vectorized.supports`). Raises
    :class:`ComponentError` for another config or a template without float leaves."""
    role = Role.PROTOCOL.value
    if isinstance(config, MaskConfig):
        config = MaskConfigPair.from_config(config)
    if not isinstance(config, MaskConfigPair):
        raise ComponentError(f"config must be a MaskConfig or MaskConfigPair, got "
                             f"{type(config).__name__}", component=name, role=role)
    if config.vect.data_type is not DataType.F32 or not vectorized.supports(config):
        raise ComponentError(f"config {config.vect} / {config.unit}: the vectorized masker "
                             f"takes F32 data with group orders in (2**32, 2**64), e.g. bounds "
                             f"B0, B2 or B4", component=name, role=role)
    spec = spec_of(template)
    leaves = jax.tree.leaves(spec)
    if not leaves or not all(jnp.issubdtype(s.dtype, jnp.floating) for s in leaves):
        raise ComponentError("template needs at least one leaf, every leaf a float array",
                             component=name, role=role)
    length = sum(math.prod(s.shape) for s in leaves)
    dc = vectorized.device_config(config)
    whole = (rejection.blocks_for(length, rejection.acceptance(config.vect.order))
             + rejection.blocks_for(1, rejection.acceptance(config.unit.order)))
    steps = {"length": length, "chunk_blocks": min(whole, CHUNK_BLOCKS)}
    orders = limbs.u64_from_ints([config.vect.order] * length + [config.unit.order])
    bound, unit_bound = float(config.vect.add_shift), float(config.unit.add_shift)
    offsets = U64(*(np.concatenate([np.full(length, v), [u]]).astype(np.uint32)
                    for v, u in zip(dc.vect.bound_scaled, dc.unit.bound_scaled)))
    scales = np.concatenate([np.full(length, float(config.vect.exp_shift)),
                             [float(config.unit.exp_shift)]]).astype(np.float32)
    max_models = min(config.vect.max_nb_models, config.unit.max_nb_models)

    def init(key: jax.Array) -> PetMaskingState:
        return PetMaskingState(key)

    def mask(state: PetMaskingState, values: PyTree, scalar: jax.Array
             ) -> tuple[PetMaskingState, tuple[Limbs, jax.Array, jax.Array]]:
        flat = _flatten(cast_like(spec, values, "values", component=name, role=role,
                                  method="mask"))
        s = jnp.asarray(scalar, jnp.float32).reshape(())
        fits = (jnp.isfinite(s) & (s >= 0) & (s <= unit_bound) & jnp.all(jnp.isfinite(flat))
                & jnp.all(jnp.abs(s * flat) <= bound))
        key, sub = jax.random.split(state.key)
        seed = jax.random.bits(sub, (8,), jnp.uint32)
        masked = vectorized.mask_limbs(dc, seed[None], jnp.where(fits, s, 0.0)[None],
                                       jnp.where(fits, flat, 0.0)[None], integer=False, **steps)
        return PetMaskingState(key), ((masked.lo[0], masked.hi[0]), seed, fits)

    def mask_sum(state: PetMaskingState, seeds: jax.Array, included: jax.Array
                 ) -> tuple[PetMaskingState, Limbs]:
        seeds = jnp.asarray(seeds, jnp.uint32)
        if seeds.ndim != 2 or seeds.shape[1] != 8:
            raise ComponentError(f"seeds must be uint32[k, 8], got shape {seeds.shape}",
                                 component=name, role=role, method="mask_sum")
        _check_rows(seeds.shape[0], max_models)
        masks = vectorized.derive_limbs(dc, seeds, **steps)
        return state, _modular_sum(masks, included, orders)

    def aggregate(state: PetMaskingState, masked: Limbs, included: jax.Array
                  ) -> tuple[PetMaskingState, Limbs]:
        lo, hi = (jnp.asarray(v, jnp.uint32) for v in masked)
        if lo.ndim != 2 or lo.shape[1] != length + 1 or hi.shape != lo.shape:
            raise ComponentError(f"masked must be two uint32[k, {length + 1}], got shapes "
                                 f"{lo.shape} and {hi.shape}", component=name, role=role,
                                 method="aggregate")
        _check_rows(lo.shape[0], max_models)
        return state, _modular_sum(U64(lo, hi), included, orders)

    def unmask(state: PetMaskingState, total: Limbs, mask_total: Limbs, count: jax.Array
               ) -> tuple[PetMaskingState, tuple[PyTree, jax.Array, jax.Array]]:
        q = U64(*(jnp.asarray(v) for v in orders))
        agg, msk = (U64(*(jnp.asarray(v, jnp.uint32) for v in x)) for x in (total, mask_total))
        diff = limbs.sub(agg, msk)
        n = limbs.where(limbs.less(agg, msk), limbs.add(diff, q)[0], diff)
        nb = jnp.asarray(count, jnp.int32).astype(jnp.uint32)
        low, mid, _ = limbs.mul_u64_u32(U64(*(jnp.asarray(v) for v in offsets)), nb)
        offset = U64(low, mid)  # count * B * E < order < 2**64
        negative = limbs.less(n, offset)
        magnitude = limbs.where(negative, limbs.sub(offset, n), limbs.sub(n, offset))
        value = (magnitude.hi.astype(jnp.float32) * np.float32(2.0**32)
                 + magnitude.lo.astype(jnp.float32))
        value = jnp.where(negative, -value, value) / scales
        scalar_sum = value[-1]
        ok = (count > 0) & (scalar_sum > 0)
        mean = jnp.where(ok, value[:-1] / jnp.where(ok, scalar_sum, 1.0), 0.0)
        return state, (_unflatten(spec, mean), scalar_sum, ok)

    config_record = {"vect": _describe(config.vect), "unit": _describe(config.unit),
                     "chunk_blocks": steps["chunk_blocks"]}
    return Component(Role.PROTOCOL, init, {"mask": mask, "mask_sum": mask_sum,
                                           "aggregate": aggregate, "unmask": unmask},
                     name, config=config_record)


def _describe(config: MaskConfig) -> str:
    return "/".join(getattr(config, f).value for f in ("group_type", "data_type", "bound_type",
                                                        "model_type"))


def _check_rows(rows: int, max_models: int) -> None:
    if isinstance(rows, int) and rows > max_models:  # symbolic cohorts: checked when lowered
        raise AggregationError(f"TooManyModels: {rows} models, the configs allow {max_models}")


def _modular_sum(rows: U64, included: jax.Array, orders: U64) -> Limbs:
    """``sum`` of the ``included`` rows modulo the orders (excluded rows count as 0)."""
    keep = jnp.asarray(included, bool)[:, None]
    lo, hi = (jnp.where(keep, v, jnp.uint32(0)) for v in rows)
    q_lo, q_hi = (jnp.broadcast_to(jnp.asarray(v), lo.shape) for v in orders)

    def add(a, b):
        # each operand carries its element's order: the init's order 0 meets a real one in
        # max, so this is associative and commutative with identity (0, 0, 0, 0)
        a_q, b_q = U64(a[2], a[3]), U64(b[2], b[3])
        q = limbs.where(limbs.less(a_q, b_q), b_q, a_q)
        return (*limbs.add_mod(U64(a[0], a[1]), U64(b[0], b[1]), q), *q)

    zero = np.uint32(0)
    out = jax.lax.reduce((lo, hi, q_lo, q_hi), (zero,) * 4, add, (0,))
    return out[0], out[1]


def _flatten(tree: PyTree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(leaf).astype(jnp.float32) for leaf in jax.tree.leaves(tree)])


def _unflatten(spec: PyTree, flat: jax.Array) -> PyTree:
    leaves, treedef = jax.tree.flatten(spec)
    out, start = [], 0
    for s in leaves:
        size = math.prod(s.shape)
        out.append(flat[start:start + size].reshape(s.shape).astype(s.dtype))
        start += size
    return jax.tree.unflatten(treedef, out)


