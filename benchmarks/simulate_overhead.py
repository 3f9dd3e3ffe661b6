"""bbjax's jitted FedAvg round against the same round written by hand in pure JAX, same
process, interleaved.

The hand-written round is what a JAX expert would write for the limit: the global
parameters as a plain pytree, ``jax.vmap`` over the round's client ids of a ``lax.scan``
over the ``local_steps`` SGD steps, each on ``batch`` rows ``x[i, rows]`` drawn uniformly
among client ``i``'s real (unpadded) rows with ``jax.random.randint``, then the average
weighted by example counts. With a cohort it draws the round's client ids with
``jax.random.choice`` (no replacement), as bbjax does; the rows are gathered straight
from the padded data of all clients, never copying the cohort's data. Same data, model,
initial parameters, optimizer and FLOPs as bbjax's round (``bbjax.experiments.fedavg``:
FedProx Synthetic(1, 1), MLP 60-64-10 or logistic regression, client-side ``optax.sgd``).

Two bbjax rounds: ``bbjax``, the experiment as built (batches from ``padded_data_source``:
epochs that visit every real row once), and ``bbjax_rows``, the same experiment with the
hand-written round's sampling as its DataSource (``fedavg_workload.random_rows_source``).
bbjax / hand is the overhead a user sees (goal <= 1.10); bbjax_rows / hand is the
simulation engine's own, at equal work.

Shapes: every client runs (``Peers(cohort=None)``, 100 clients) and a sampled cohort (100
of 1000 clients per round). Reports median ms per round and ratios of medians, checks
that every variant lowers the test loss of the initial global model over the timed
rounds, writes benchmarks/results/simulate_overhead_<platform>.json and one row per shape
in RESULTS.md.

    python benchmarks/simulate_overhead.py [--model mlp|logreg] [--device cpu|gpu]
        [--local-steps 20] [--batch 10] [--reps 30] [--calls 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(__file__))
import timing  # noqa: E402
from fedavg_workload import BbjaxRounds, experiment, fedavg_config, with_rows_source  # noqa: E402

from bbjax.data import FederatedData  # noqa: E402
from bbjax.experiments import FedAvgConfig  # noqa: E402
from bbjax.models import cross_entropy  # noqa: E402

Params = Any
RoundFn = Callable[[Params, tuple[jax.Array, jax.Array, jax.Array], int],
                   tuple[Params, jax.Array]]


@dataclass(frozen=True)
class Shape:
    name: str
    clients: int
    cohort: int | None  # None: every client runs


SHAPES = [Shape("full", 100, None), Shape("cohort", 1000, 100)]
QUICK_SHAPES = [Shape("full", 20, None), Shape("cohort", 100, 20)]


def forward(params: Params, x: jax.Array) -> jax.Array:
    """The experiment's model on bbjax's parameter pytree: ``out(relu(hidden(x)))`` for the
    MLP, ``out(x)`` for logistic regression (``nnx.Linear``: ``x @ kernel + bias``)."""
    if "hidden" in params:
        x = jax.nn.relu(x @ params["hidden"]["kernel"] + params["hidden"]["bias"])
    return x @ params["out"]["kernel"] + params["out"]["bias"]


def hand_round(cfg: FedAvgConfig, batch: int, key: jax.Array) -> RoundFn:
    """The hand-written round ``(params, (x, y, sizes), r) -> (params, train_loss)`` with
    key ``fold_in(key, r)``: ``cfg.clients_per_round`` clients drawn without replacement
    (all of them, undrawn, when that is ``cfg.num_clients``), each step's rows gathered
    straight from the padded data (no copy of the cohort's data)."""
    cohort = cfg.clients_per_round if cfg.clients_per_round < cfg.num_clients else None

    def run(params, data, r):
        cohort_key, clients_key = jax.random.split(jax.random.fold_in(key, r))
        x, y, sizes = data
        ids = (jnp.arange(sizes.shape[0]) if cohort is None
               else jax.random.choice(cohort_key, sizes.shape[0], (cohort,), replace=False))

        def client(i, key):
            def step(params, key):
                rows = jax.random.randint(key, (batch,), 0, sizes[i])
                value, grads = jax.value_and_grad(
                    lambda p: cross_entropy(forward(p, x[i, rows]), y[i, rows]))(params)
                return jax.tree.map(lambda p, g: p - cfg.learning_rate * g, params, grads), value

            params_i, losses = jax.lax.scan(step, params, jax.random.split(key, cfg.local_steps))
            return params_i, losses.mean()

        updated, losses = jax.vmap(client)(ids, jax.random.split(clients_key, ids.shape[0]))
        weights = sizes[ids].astype(jnp.float32) / jnp.sum(sizes[ids])
        return jax.tree.map(lambda a: jnp.tensordot(weights, a, 1), updated), weights @ losses

    return run


class HandRounds:
    """The hand-written round jitted with the parameters donated, one round per call."""

    def __init__(self, fn: RoundFn, params: Params, data: tuple):
        self.fn, self.params, self.data, self.r = jax.jit(fn, donate_argnums=0), params, data, 0

    def __call__(self) -> jax.Array:
        self.params, train_loss = self.fn(self.params, self.data, self.r)
        self.r += 1
        return train_loss

    def global_params(self) -> Params:
        return self.params


@jax.jit
def test_metrics(params: Params, test: FederatedData) -> dict[str, jax.Array]:
    """Loss and accuracy of ``params`` on every client's test examples, pooled."""
    x = test.x.reshape(-1, test.x.shape[-1])
    y, mask = test.y.reshape(-1), test.mask.reshape(-1).astype(jnp.float32)
    logits = forward(params, x)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    return {"test_loss": losses @ mask / mask.sum(),
            "accuracy": (jnp.argmax(logits, -1) == y).astype(jnp.float32) @ mask / mask.sum()}


def measure(shape: Shape, base: FedAvgConfig, reps: int, calls: int) -> dict:
    cfg = base.replace(num_clients=shape.clients, clients_per_round=shape.cohort or shape.clients)
    exp = experiment(cfg, full=shape.cohort is None)
    key = jax.random.PRNGKey(cfg.seed)
    bbjax_rounds = BbjaxRounds(exp, key)
    initial = bbjax_rounds.global_params()
    data = jax.device_put((exp.train.x, exp.train.y, exp.train.sizes))
    batch = min(cfg.batch_size, int(exp.train.sizes.min()))
    runners = {"hand": HandRounds(hand_round(cfg, batch, key),
                                  jax.tree.map(jnp.copy, initial), data),
               "bbjax_rows": BbjaxRounds(with_rows_source(exp), key),
               "bbjax": bbjax_rounds}
    samples = timing.interleaved(runners, reps, calls)
    ms = {name: timing.median_ms(values) for name, values in samples.items()}
    test = jax.device_put(exp.test)
    quality = {"initial": test_metrics(initial, test),
               **{name: test_metrics(r.global_params(), test) for name, r in runners.items()}}
    quality = {name: {k: float(v) for k, v in m.items()} for name, m in quality.items()}
    rounds, start = bbjax_rounds.r, quality["initial"]["test_loss"]
    worse = [name for name in runners if not quality[name]["test_loss"] < start]
    if worse:
        raise SystemExit(f"{shape.name}: test loss not below the initial {start:.3f} after "
                         f"{rounds} rounds for {worse}: {quality}")
    result = {"clients": shape.clients, "cohort": shape.cohort, "rounds_run": rounds,
              "median_ms": ms, "ratio": ms["bbjax"] / ms["hand"],
              "engine_ratio": ms["bbjax_rows"] / ms["hand"], "test": quality,
              "samples_ms": {k: [v * 1e3 for v in vs] for k, vs in samples.items()}}
    print(f"{shape.name} ({shape.clients} clients, {shape.cohort or shape.clients} per round): "
          + ", ".join(f"{k} {v:.2f} ms" for k, v in ms.items())
          + f"; bbjax/hand {result['ratio']:.3f}, bbjax_rows/hand {result['engine_ratio']:.3f}"
          f"; test loss after {rounds} rounds: "
          + ", ".join(f"{k} {v['test_loss']:.3f}" for k, v in quality.items()))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mlp", "logreg"], default="mlp")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--local-steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 20 and 100/20 clients, 5 local steps, 10 reps")
    args = parser.parse_args()
    jax.config.update("jax_platforms", "cuda" if args.device == "gpu" else "cpu")
    shapes = QUICK_SHAPES if args.quick else SHAPES
    local_steps, reps = (5, 10) if args.quick else (args.local_steps, args.reps)
    base = fedavg_config(args.model, local_steps=local_steps, batch_size=args.batch)
    results = {s.name: measure(s, base, reps, args.calls) for s in shapes}
    record = {"config": base.to_dict(), "reps": reps, "calls_per_rep": args.calls,
              "results": results, "command": " ".join(["python"] + sys.argv)}
    for shape in shapes:
        r = results[shape.name]
        ms = r["median_ms"]
        cells = [f"{args.model}, {shape.clients} clients, {shape.cohort or 'all'} per round, "
                 f"K={local_steps}, B={args.batch}",
                 f"{ms['hand']:.2f}", f"{ms['bbjax_rows']:.2f}", f"{ms['bbjax']:.2f}",
                 f"**{r['ratio']:.3f}**", f"{r['engine_ratio']:.3f}",
                 " / ".join(f"{r['test'][k]['test_loss']:.3f}"
                            for k in ("initial", "hand", "bbjax_rows", "bbjax")),
                 f"`{record['command']}`"]
        path = timing.write("simulate_overhead", record, cells)
    print("wrote", path)


if __name__ == "__main__":
    main()
