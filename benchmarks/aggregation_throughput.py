"""Aggregation throughput: each rule of ``bbjax.aggregators`` (jitted) against a numpy
implementation of the same rule, same process, interleaved.

Both sides implement the same rule (mask and non-finite clients excluded, float32) in the
way that suits each: numpy accumulates weighted sums client by client (Flower's in-place
FedAvg), walks column blocks of the stacked ``[clients, params]`` matrix for order
statistics (``np.partition``) and Krum's Gram matrix (BLAS); bbjax does what
``bbjax.aggregators`` does. Reports the ratio
of median times (numpy / jax) and the extra memory beyond the stacked input: XLA's compiled
temp buffers (plus the device's peak where it reports one) for jax, the tracemalloc peak
for numpy. Writes benchmarks/results/aggregation_throughput_<platform>.json and one row per
rule in RESULTS.md.

    python benchmarks/aggregation_throughput.py [--clients 1000] [--params 1000000]
        [--rules fedavg,median,...] [--reps 5] [--device cpu|gpu] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

RULES = ["fedavg", "fedavgm", "fedadagrad", "fedadam", "fedyogi", "qfedavg", "scaffold",
         "median", "trimmed_mean", "krum", "multikrum", "bulyan"]
BLOCK_ELEMENTS = 1 << 21  # numpy's column blocks (order statistics, Gram matrix)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--params", type=int, default=1_000_000)
    p.add_argument("--rules", default=",".join(RULES))
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--markdown", type=Path, default=None,
                   help="RESULTS.md to append rows to (default benchmarks/RESULTS.md)")
    return p.parse_args()


args = parse()
os.environ["JAX_PLATFORMS"] = "cuda" if args.device == "gpu" else "cpu"

import jax  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import timing  # noqa: E402

import bbjax.aggregators as agg  # noqa: E402

F = 10  # num_malicious for krum / multikrum; bulyan uses min(F, (n - 3) // 4)
HYPER = {
    "fedavg": {}, "fedavgm": dict(server_learning_rate=1.0, server_momentum=0.9),
    "fedadagrad": dict(eta=0.1, tau=1e-9), "fedadam": dict(eta=0.1, beta_1=0.9, beta_2=0.99,
                                                            tau=1e-9),
    "fedyogi": dict(eta=0.01, beta_1=0.9, beta_2=0.99, tau=1e-3),
    "qfedavg": dict(q=0.2, learning_rate=0.1), "scaffold": dict(server_learning_rate=1.0),
    "median": {}, "trimmed_mean": dict(proportion=0.2), "krum": dict(num_malicious=F),
    "multikrum": dict(num_malicious=F, num_to_keep=None), "bulyan": dict(num_malicious=F),
}


# ---------------------------------------------------------------- numpy implementations

def np_blocks(n: int, d: int):
    cols = max(1, BLOCK_ELEMENTS // n)
    return [slice(s, min(s + cols, d)) for s in range(0, d, cols)]


def np_present(x, mask):
    return mask & np.isfinite(x.max(axis=1)) & np.isfinite(x.min(axis=1))


def np_weighted_sum(coef, x, present, center=None):
    """Flower's in-place accumulation, one client row at a time."""
    out = np.zeros(x.shape[1], np.float32)
    for i in np.flatnonzero(present):
        out += np.float32(coef[i]) * (x[i] if center is None else x[i] - center)
    return out


def np_fedavg_mean(x, w, present):
    w = np.where(present, w, 0)
    return np_weighted_sum(w / w.sum(), x, present)


def np_rule(name, hyper, g, x, w, mask, extra, state):
    """One round of rule ``name``; returns (new_global, state)."""
    present = np_present(x, mask)
    if name == "fedavg":
        return np_fedavg_mean(x, w, present), state
    if name == "fedavgm":
        mean = np_fedavg_mean(x, w, present)
        m = hyper["server_momentum"] * state + (g - mean)
        return g - hyper["server_learning_rate"] * m, m
    if name in ("fedadagrad", "fedadam", "fedyogi"):
        count, m, v = state
        delta = np_fedavg_mean(x, w, present) - g
        b1 = hyper.get("beta_1", 0.0)
        b2 = hyper.get("beta_2", 0.0)
        m = b1 * m + (1 - b1) * delta
        lr = hyper["eta"]
        if name == "fedadagrad":
            v = v + delta * delta
        elif name == "fedadam":
            v = b2 * v + (1 - b2) * delta * delta
            lr = lr * np.sqrt(1 - b2 ** (count + 2)) / (1 - b1 ** (count + 2))
        else:
            v = v - (1 - b2) * delta * delta * np.sign(v - delta * delta)
        return g + np.float32(lr) * m / (np.sqrt(v) + hyper["tau"]), (count + 1, m, v)
    if name == "qfedavg":
        q, lr = hyper["q"], hyper["learning_rate"]
        present &= np.isfinite(extra)
        sq = np.zeros(x.shape[0], np.float32)
        for i in range(x.shape[0]):
            y = x[i] - g
            sq[i] = y @ y
        f = np.where(present, extra, 1.0) + 1e-10
        h = q * f ** (q - 1) * sq / lr ** 2 + f ** q / lr
        coef = f ** q / (lr * h[present].sum())
        return g + np_weighted_sum(coef, x, present, g), state
    if name == "scaffold":
        present &= np_present(extra, mask)
        ww = np.where(present, w, 0)
        new = g + hyper["server_learning_rate"] * np_weighted_sum(ww / ww.sum(), x, present, g)
        ones = np.ones_like(w) / present.sum()
        return new, state + np_weighted_sum(ones, extra, present)
    m = int(present.sum())
    if name in ("median", "trimmed_mean"):
        out = np.empty(x.shape[1], np.float32)
        cut = int(hyper["proportion"] * m) if name == "trimmed_mean" else 0
        for s in np_blocks(*x.shape):
            b = np.where(present[:, None], x[:, s], np.inf)
            if name == "median":
                p = np.partition(b, ((m - 1) // 2, m // 2), axis=0)
                out[s] = (p[(m - 1) // 2] + p[m // 2]) / 2
            else:
                p = np.partition(b, (cut, m - cut - 1), axis=0)
                out[s] = p[cut:m - cut].mean(axis=0)
        return out, state
    # Krum family: squared distances from the Gram matrix of offsets from g.
    f = hyper["num_malicious"]
    n = x.shape[0]
    gram = np.zeros((n, n), np.float32)
    for s in np_blocks(*x.shape):
        y = x[:, s] - g[s]
        gram += y @ y.T
    sq = np.diag(gram)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2 * gram, 0)
    keep = present[:, None] & present[None, :] & ~np.eye(n, dtype=bool) & ~np.isnan(dist)
    dist = np.where(keep, dist, np.inf)

    def scores(members):
        idx = np.flatnonzero(members)
        k = max(1, len(idx) - f - 2)
        sub = dist[np.ix_(idx, idx)]
        s = np.full(n, np.inf)
        s[idx] = np.sort(np.partition(sub, k - 1, axis=1)[:, :k], axis=1).sum(axis=1)
        return s

    if name == "krum":
        return x[int(np.argmin(scores(present)))].copy(), state
    if name == "multikrum":
        kept = np.zeros(n, bool)
        kept[np.argsort(scores(present), kind="stable")[:hyper["num_to_keep"]]] = True
        kept &= present
        ww = np.where(kept, w, 0)
        return np_weighted_sum(ww / ww.sum(), x, kept), state
    theta, beta = m - 2 * f, m - 4 * f
    left, picked = present.copy(), np.zeros(n, bool)
    for _ in range(theta):
        best = int(np.argmin(scores(left)))
        left[best], picked[best] = False, True
    out = np.empty(x.shape[1], np.float32)
    for s in np_blocks(*x.shape):
        vals = x[picked, s]
        med = np.median(vals, axis=0)
        closest = np.argpartition(np.abs(vals - med), beta - 1, axis=0)[:beta]
        out[s] = np.take_along_axis(vals, closest, axis=0).mean(axis=0)
    return out, state


# ---------------------------------------------------------------------------- harness

def make_rule(name, n):
    hyper = dict(HYPER[name])
    if name == "multikrum":
        hyper["num_to_keep"] = n - F
    if name == "bulyan":
        hyper["num_malicious"] = min(F, (n - 3) // 4)
    make = agg.krum if name == "multikrum" else getattr(agg, name)
    return make(**hyper), hyper


def np_state(name, g):
    if name == "fedavgm":
        return np.zeros_like(g)
    if name in ("fedadagrad", "fedadam", "fedyogi"):
        return 0, np.zeros_like(g), np.zeros_like(g)
    if name == "scaffold":
        return np.zeros_like(g)
    return None


def numpy_peak_bytes(fn) -> int:
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak - base


def main() -> None:
    n, d = args.clients, args.params
    if args.markdown is not None:
        timing.RESULTS_MD = args.markdown
    r = np.random.default_rng(0)
    g_np = r.standard_normal(d, dtype=np.float32)
    x_np = np.empty((n, d), np.float32)
    for i in range(n):
        x_np[i] = g_np + np.float32(0.01) * r.standard_normal(d, dtype=np.float32)
    w_np = r.integers(1, 1000, n).astype(np.float32)
    mask_np = r.random(n) >= 0.01  # about 1% of the cohort absent
    losses_np = r.uniform(0.5, 2.0, n).astype(np.float32)
    device = jax.devices()[0]
    g, x, w, mask = (jax.device_put(a, device) for a in (g_np, x_np, w_np, mask_np))
    if device.platform == "cpu":  # share one buffer: numpy reads the jax array in place
        del x_np
        x_np = np.asarray(x)
    deltas = deltas_np = None
    if "scaffold" in args.rules.split(","):
        noise = r.standard_normal((n, d), dtype=np.float32)
        noise *= np.float32(1e-3)
        deltas = jax.device_put(noise, device)
        del noise
        deltas_np = np.asarray(deltas)
    argv = [a for i, a in enumerate(sys.argv[1:])
            if a != "--markdown" and (i == 0 or sys.argv[i] != "--markdown")]
    command = " ".join(["python benchmarks/aggregation_throughput.py", *argv])
    record = {"clients": n, "params": d, "block_elements_numpy": BLOCK_ELEMENTS, "rules": {}}
    for name in args.rules.split(","):
        rule, hyper = make_rule(name, n)
        kw, extra = {}, None
        if name == "qfedavg":
            kw, extra = {"losses": jax.device_put(losses_np, device)}, losses_np
        if name == "scaffold":
            kw, extra = {"control_deltas": deltas}, deltas_np
        state = rule.init(g)
        step = jax.jit(rule.aggregate)
        t0 = time.perf_counter()
        compiled = step.lower(state, g, x, w, mask, **kw).compile()
        compile_s = time.perf_counter() - t0
        s_np = np_state(name, g_np)

        def run_jax():
            return compiled(state, g, x, w, mask, **kw)[0]

        def run_numpy():
            return np_rule(name, hyper, g_np, x_np, w_np, mask_np, extra, s_np)[0]

        ours, theirs = np.asarray(run_jax()), run_numpy()
        err = float(np.max(np.abs(ours - theirs)) / max(1e-30, float(np.max(np.abs(theirs)))))
        samples = timing.interleaved({"jax": run_jax, "numpy": run_numpy}, args.reps, calls=1)
        mem = compiled.memory_analysis()
        jax_extra = int(mem.temp_size_in_bytes + mem.output_size_in_bytes)
        stats = device.memory_stats() or {}
        np_extra = numpy_peak_bytes(run_numpy)
        jax_ms, np_ms = timing.median_ms(samples["jax"]), timing.median_ms(samples["numpy"])
        record["rules"][name] = {
            "hyperparameters": hyper, "jax_ms": jax_ms, "numpy_ms": np_ms,
            "speedup": np_ms / jax_ms, "jax_samples_s": samples["jax"],
            "numpy_samples_s": samples["numpy"], "compile_s": compile_s,
            "jax_extra_bytes": jax_extra, "device_peak_bytes": stats.get("peak_bytes_in_use"),
            "numpy_extra_bytes": np_extra, "input_bytes": x_np.nbytes,
            "max_rel_diff_vs_numpy": err,
        }
        record["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(f"{name:13s} jax {jax_ms:10.1f} ms  numpy {np_ms:10.1f} ms  "
              f"speedup {np_ms / jax_ms:6.2f}  extra MB jax {jax_extra / 2**20:8.1f} "
              f"numpy {np_extra / 2**20:8.1f}  rel.diff {err:.1e}  compile {compile_s:.1f} s",
              flush=True)
        cells = [f"{n} × {d:,}", name, f"{jax_ms:.1f}", f"{np_ms:.1f}", f"{np_ms / jax_ms:.2f}",
                 f"{jax_extra / 2**20:.1f}", f"{np_extra / 2**20:.1f}", f"`{command}`"]
        path = timing.write("aggregation_throughput", record, cells)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
