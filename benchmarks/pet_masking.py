"""PET masking throughput: bbjax's vectorized masker against the exact Python-int reference and
a Flower-SecAgg+-style numpy masker, same process; and ChaCha20 keystream speed.

For N = 10, 100, 1000 participants, the time to mask N models of 1M parameters each and to
aggregate the N masked models (sum modulo the group order). Masking costs the same per
participant and parameter whatever N is, so it is timed once on a cohort of ``--cohort``
participants x ``--length`` parameters and scaled; aggregation is timed at each N on
``--agg-length`` parameters and scaled to 1M. bbjax and numpy are timed interleaved at the
same sizes (the ratio is numpy / bbjax of median times); the exact reference (Masker.mask +
Aggregation.aggregate, Python integers) on a slice of ``--exact-length`` parameters.

* bbjax: ``mask_program`` / ``aggregate_program`` (what VectorizedMasker runs, without its
  input validation), masks bit-identical to xaynet's (ChaCha20 + rejection sampling below
  the group order).
* numpy, as Flower's SecAgg+ client: stochastic quantization to ``[0, 2**22]`` of weights
  clipped to [-8, 8], one MT19937 ``RandomState(seed).randint`` mask modulo 2**32 (SecAgg+
  adds one pairwise mask per neighbour too; one mask is the cheapest case), and the
  server's sum of the masked vectors modulo 2**32.

Keystream speed: ``bbjax.protocols.pet.chacha20.keystream`` (materialized words), the fused
block evaluation the masker runs (64 bytes per block, consumed in the same XLA loop), and
pyca/cryptography's ChaCha20 (OpenSSL), in GB/s.

Writes benchmarks/results/pet_masking.json (RESULTS.md is left alone).

    python benchmarks/pet_masking.py [--quick] [--configs Prime/F32/B0/M3,Power2/F32/B0/M6]
        [--reps 5]

The default configs: xaynet's default (acceptance 7%: ~14 ChaCha20 candidates per
parameter) and the catalogue's best case (acceptance 50%).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from bbjax.protocols.pet import chacha20, limbs, rejection, vectorized
from bbjax.protocols.pet.config import MaskConfig, MaskConfigPair
from bbjax.protocols.pet.masking import Aggregation, Masker, MaskSeed
from bbjax.protocols.pet.vectorized import VectorizedMasker, aggregate_program, mask_program

sys.path.insert(0, os.path.dirname(__file__))
import timing  # noqa: E402

MILLION = 1_000_000
COHORTS = (10, 100, 1000)
CLIP, TARGET, MODULUS = 8.0, 2**22, 2**32  # Flower SecAggPlusWorkflow's defaults


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, fewer repetitions")
    p.add_argument("--configs", default="Prime/F32/B0/M3,Power2/F32/B0/M6",
                   help="comma-separated group/data/bound/model")
    p.add_argument("--cohort", type=int, default=None, help="participants masked per call")
    p.add_argument("--length", type=int, default=None, help="parameters masked per participant")
    p.add_argument("--agg-length", type=int, default=None, help="parameters aggregated per call")
    p.add_argument("--exact-length", type=int, default=None, help="parameters for the exact reference")
    p.add_argument("--reps", type=int, default=None)
    args = p.parse_args()
    defaults = ((4, 1 << 12, 1 << 11, 256, 3) if args.quick else (8, 1 << 17, 1 << 14, 2048, 5))
    for name, value in zip(("cohort", "length", "agg_length", "exact_length", "reps"), defaults):
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


# -- Flower SecAgg+-style numpy ---------------------------------------------------------------

def numpy_mask(seed: bytes, weights: np.ndarray) -> np.ndarray:
    """One client's masked vector: stochastic quantization plus one seeded randint mask."""
    pre = (np.clip(weights, -CLIP, CLIP) + CLIP) * (TARGET / (2 * CLIP))
    quantized = np.ceil(pre).astype(np.int64)
    quantized[np.random.rand(*pre.shape) < quantized - pre] -= 1
    seed32 = 0
    for i in range(0, len(seed), 4):
        seed32 ^= int.from_bytes(seed[i : i + 4], "little")
    mask = np.random.RandomState(seed32).randint(0, MODULUS - 1, weights.shape, dtype=np.int64)
    return (quantized + mask) % MODULUS


def numpy_aggregate(masked: np.ndarray) -> np.ndarray:
    return masked.sum(axis=0) % MODULUS


# -- measurements -----------------------------------------------------------------------------

def keystream_speed(reps: int, n_keys: int, n_blocks: int) -> dict[str, float]:
    keys = jnp.asarray(np.random.default_rng(0).integers(0, 2**32, (n_keys, 8), dtype=np.uint64)
                       .astype(np.uint32))
    words = 16 * n_blocks
    materialized = jax.jit(lambda k: chacha20.keystream(k, words))

    def fused(k):  # every word of every block consumed in the loop that computes it
        planes = chacha20.blocks(k, jnp.broadcast_to(jnp.arange(n_blocks, dtype=jnp.uint32),
                                                     (n_keys, n_blocks)))
        out = planes[0]
        for p in planes[1:]:
            out = out ^ p
        return out

    fused = jax.jit(fused, compiler_options=vectorized.COMPILER_OPTIONS)
    key_bytes = [bytes(np.asarray(keys[i]).astype("<u4").tobytes()) for i in range(n_keys)]

    def pyca():
        for key in key_bytes:
            Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor().update(bytes(64 * n_blocks))

    total = n_keys * 64 * n_blocks
    samples = timing.interleaved({"jax_keystream": lambda: materialized(keys),
                                  "jax_fused_blocks": lambda: fused(keys),
                                  "cryptography": pyca}, reps=reps, calls=1)
    return {name: total / float(np.median(v)) / 1e9 for name, v in samples.items()}


def mask_speed(pair: MaskConfigPair, args) -> dict[str, float]:
    """Seconds per participant-parameter to mask: bbjax and numpy interleaved, exact apart."""
    n, length = args.cohort, args.length
    rng = np.random.default_rng(1)
    seeds = [MaskSeed.generate() for _ in range(n)]
    weights = rng.uniform(-1, 1, (n, length)).astype(np.float32)
    scalars = np.ones(n, np.float32)
    vm = VectorizedMasker(pair, length)
    steps = vm._steps(n)  # the default scan the public API takes
    keys, s, w = (jnp.asarray(x) for x in (chacha20.seed_words(seeds), scalars, weights))
    raw = [seed.as_bytes() for seed in seeds]

    def bbjax_mask():
        return mask_program(vm.device, keys, s, w, integer=False, **steps)

    def numpy_masks():
        return [numpy_mask(seed, row) for seed, row in zip(raw, weights)]

    got = vm.to_mask_objects(bbjax_mask())[0]  # one check that the timed path is the real one
    assert got == Masker(pair).mask(scalars[0], weights[0], seed=seeds[0])[1]
    samples = timing.interleaved({"bbjax": bbjax_mask, "numpy": numpy_masks}, reps=args.reps, calls=1)
    out = {name: float(np.median(v)) / (n * length) for name, v in samples.items()}
    exact_n, exact_len = 2, args.exact_length
    start = time.perf_counter()
    for seed, row in zip(seeds[:exact_n], weights[:exact_n, :exact_len]):
        Masker(pair).mask(1.0, row, seed=seed)
    out["exact"] = (time.perf_counter() - start) / (exact_n * exact_len)
    return out


def aggregate_speed(pair: MaskConfigPair, n: int, args) -> dict[str, float]:
    """Seconds per parameter to aggregate ``n`` masked models."""
    length = args.agg_length
    rng = np.random.default_rng(n)
    q = pair.vect.order
    values = rng.integers(0, q, (n, length + 1), dtype=np.uint64)
    masked = limbs.U64(jnp.asarray((values & np.uint64(0xFFFFFFFF)).astype(np.uint32)),
                       jnp.asarray((values >> np.uint64(32)).astype(np.uint32)))
    orders = limbs.U64(*(jnp.asarray(v) for v in VectorizedMasker(pair, length).orders))
    flower = rng.integers(0, MODULUS, (n, length), dtype=np.int64)
    samples = timing.interleaved({"bbjax": lambda: aggregate_program(masked, orders),
                                  "numpy": lambda: numpy_aggregate(flower)}, reps=args.reps, calls=1)
    out = {name: float(np.median(v)) / length for name, v in samples.items()}
    objects = VectorizedMasker(pair, args.exact_length).to_mask_objects(
        limbs.U64(masked.lo[: min(n, 10), : args.exact_length + 1],
                  masked.hi[: min(n, 10), : args.exact_length + 1]))
    aggregation = Aggregation(pair, args.exact_length)
    start = time.perf_counter()
    for obj in objects:
        aggregation.aggregate(obj)
    out["exact"] = (time.perf_counter() - start) / len(objects) * n / args.exact_length
    return out


def config_rows(pair: MaskConfigPair, args) -> dict:
    mask = mask_speed(pair, args)
    rows = []
    for n in COHORTS:
        agg = aggregate_speed(pair, n, args)
        seconds = {k: n * MILLION * mask[k] + MILLION * agg[k] for k in ("bbjax", "numpy", "exact")}
        rows.append({"participants": n, "seconds_per_1M_params": seconds,
                     "mask_seconds_per_1M_params": {k: n * MILLION * mask[k] for k in seconds},
                     "aggregate_seconds_per_1M_params": {k: MILLION * agg[k] for k in seconds},
                     "numpy_over_bbjax": seconds["numpy"] / seconds["bbjax"],
                     "exact_over_bbjax": seconds["exact"] / seconds["bbjax"]})
    return {"acceptance": rejection.acceptance(pair.vect.order),
            "mask_ns_per_param": {k: v * 1e9 for k, v in mask.items()}, "cohorts": rows}


def main() -> None:
    args = parse()
    t0 = time.perf_counter()
    keystream = keystream_speed(args.reps, 4, 1 << (10 if args.quick else 14))
    configs = {name: config_rows(MaskConfigPair.from_config(MaskConfig(*name.split("/"))), args)
               for name in args.configs.split(",")}
    record = {
        "benchmark": "pet_masking", "date": dt.date.today().isoformat(), "machine": timing.machine(),
        "jax": jax.__version__, "quick": args.quick,
        "sizes": {k: getattr(args, k) for k in ("cohort", "length", "agg_length", "exact_length", "reps")},
        "keystream_GBps": keystream, "configs": configs, "wall_seconds": time.perf_counter() - t0,
    }
    timing.RESULTS_DIR.mkdir(exist_ok=True)
    path = timing.RESULTS_DIR / "pet_masking.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    for name, result in configs.items():
        print(f"{name}: acceptance {result['acceptance']:.3f}; mask ns/param "
              + ", ".join(f"{k} {v:.1f}" for k, v in result["mask_ns_per_param"].items()))
        for row in result["cohorts"]:
            s = row["seconds_per_1M_params"]
            print(f"  N={row['participants']:>4}: mask+aggregate of 1M params: bbjax {s['bbjax']:.3g} s, "
                  f"numpy {s['numpy']:.3g} s (numpy/bbjax {row['numpy_over_bbjax']:.2f}), exact "
                  f"{s['exact']:.3g} s (exact/bbjax {row['exact_over_bbjax']:.0f})")
    print("keystream GB/s: " + ", ".join(f"{k} {v:.2f}" for k, v in keystream.items()))
    print(f"wrote {path} in {record['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()
