"""D-PSGD scaling: bbjax's jitted multi-round program against a DecentralizePy-style
per-node Python loop.

Workload (as ``examples/decentralized_dpsgd.py``): every node holds one client of FedProx
Synthetic(1, 1) (at most 200 rows, 80% for training), a multinomial logistic regression
(60 features, 10 classes) trained by D-PSGD, ``x_i <- sum_j W_ij x_j - lr grad f_i(x_i)``:
one SGD step of batch 10 at learning rate 0.2 per round, on a random 4-regular graph
(``random_regular(N, 4, seed=0)``, its weights ``1 / (k + 1)``).

* bbjax: ``DPSGDRound`` compiled and run as ``bbjax.simulate`` runs it: ``--rounds`` rounds
  as one jitted ``lax.scan`` (``bbjax.simulation.run._scan_rounds``, states donated),
  compiled ahead of time; time per round = call / rounds. Memory: XLA's compiled memory
  analysis of that program (argument, output, alias and temp bytes) and the simulation
  states' bytes, reported as temp / (N k) and state / N.
* python (N <= 1000), the DecentralizePy style: one ``Node`` object per node holding numpy
  float32 ``W [60, 10]`` and ``b [10]``; each round every node computes its softmax
  cross-entropy gradient on its own next batch (its own shuffled epochs over its real rows),
  sends a copy of its parameters to each neighbour (a dict of message lists), then averages
  what it received with the topology's weights and takes its step, node by node.
* jax: the same rounds hand-written in pure JAX (``vmap`` of the gradient, one gather of
  the neighbours' parameters, one jitted ``lax.scan``), the floor XLA gives this workload on
  the machine; bbjax / jax is the framework's overhead over it.

Both start from the same per-node initial parameters (bbjax's). Timed in the same process,
interleaved; speed-up = python / bbjax median time per round. Accuracy: the average model's
accuracy on every node's held-out rows after ``--accuracy-rounds`` rounds from the start,
bbjax, jax and python (the three draw their batches differently). Each N runs in a fresh
subprocess with ``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false`` (what
the ``bbjax`` command sets). Writes benchmarks/results/decentralized_dpsgd_<platform>.json
and one row per N in RESULTS.md.

    python benchmarks/decentralized_dpsgd.py [--quick] [--reps R] [--rounds K]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import bbjax
from bbjax.models import LogisticRegression, cross_entropy
from bbjax.simulation import Simulation
from bbjax.simulation.run import _scan_rounds
from bbjax.strategies.decentralized.dpsgd import DPSGDRound
from bbjax.strategies.decentralized.gossip import (
    mixing_args,
    mixing_weights,
    population,
)
from bbjax.strategies.decentralized.topology import random_regular

sys.path.insert(0, os.path.dirname(__file__))
import timing

FEATURES, CLASSES, DEGREE, BATCH, LEARNING_RATE, MAX_SIZE = 60, 10, 4, 10, 0.2, 200
NODES, BASELINE_MAX = [100, 1000, 10_000], 1000
RESULT_PREFIX = "RESULT "
MEMORY_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


class Node:
    """One DecentralizePy-style node: its weights, its data, its neighbours' weights."""

    def __init__(self, uid: int, x: np.ndarray, y: np.ndarray, in_weights: dict[int, float],
                 self_weight: float, out_neighbours: list[int], kernel: np.ndarray,
                 bias: np.ndarray, seed: int):
        self.uid, self.x, self.y = uid, x, y
        self.in_weights, self.self_weight = in_weights, np.float32(self_weight)
        self.out_neighbours = out_neighbours
        self.W, self.b = kernel.astype(np.float32).copy(), bias.astype(np.float32).copy()
        self.rng = np.random.default_rng(seed)
        self.order, self.position = self.rng.permutation(len(y)), 0

    def next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        rows = []
        while len(rows) < BATCH:
            if self.position >= len(self.order):
                self.order, self.position = self.rng.permutation(len(self.y)), 0
            take = self.order[self.position:self.position + BATCH - len(rows)]
            rows.extend(take)
            self.position += len(take)
        return self.x[rows], self.y[rows]

    def gradient(self) -> tuple[np.ndarray, np.ndarray]:
        """Gradient of the mean softmax cross-entropy on the next batch at the current
        parameters."""
        xb, yb = self.next_batch()
        logits = xb @ self.W + self.b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(yb)), yb] -= 1
        p /= np.float32(len(yb))
        return xb.T @ p, p.sum(0)

    def send(self, inboxes: dict[int, list]) -> None:
        for j in self.out_neighbours:
            inboxes[j].append({"sender": self.uid, "W": self.W.copy(), "b": self.b.copy()})

    def aggregate(self, messages: list[dict], grad: tuple[np.ndarray, np.ndarray]) -> None:
        W, b = self.self_weight * self.W, self.self_weight * self.b
        for message in messages:
            w = np.float32(self.in_weights[message["sender"]])
            W += w * message["W"]
            b += w * message["b"]
        self.W = W - np.float32(LEARNING_RATE) * grad[0]
        self.b = b - np.float32(LEARNING_RATE) * grad[1]


class PythonDPSGD:
    """The per-node loop: every call runs ``rounds`` D-PSGD rounds over all nodes."""

    def __init__(self, topology: Any, train: Any, kernels: np.ndarray, biases: np.ndarray,
                 rounds: int):
        _, _, neighbours, out, _ = mixing_args(topology)
        x, y, sizes = np.asarray(train.x), np.asarray(train.y), np.asarray(train.sizes)
        self.rounds = rounds
        self.nodes = [
            Node(i, x[i, :sizes[i]], y[i, :sizes[i]],
                 {int(j): float(w) for j, w in zip(neighbours[i], topology.weights[0, i])
                  if j >= 0},
                 float(topology.self_weights[0, i]), [int(j) for j in out[i] if j >= 0],
                 kernels[i], biases[i], seed=i)
            for i in range(topology.count)]

    def __call__(self) -> None:
        for _ in range(self.rounds):
            grads = [node.gradient() for node in self.nodes]
            inboxes: dict[int, list] = {node.uid: [] for node in self.nodes}
            for node in self.nodes:
                node.send(inboxes)
            for node, grad in zip(self.nodes, grads):
                node.aggregate(inboxes[node.uid], grad)

    def average(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.mean([n.W for n in self.nodes], 0), np.mean([n.b for n in self.nodes], 0))


class BbjaxDPSGD:
    """``rounds`` D-PSGD rounds as ``simulate`` runs them: ``_scan_rounds`` jitted with the
    states donated, compiled ahead of time. Each call continues from the last call's
    states."""

    def __init__(self, nodes: int, rounds: int):
        data = bbjax.data.synthetic(1.0, 1.0, num_clients=nodes, seed=0, max_size=MAX_SIZE)
        self.train, self.test = bbjax.data.train_test_split(jax.random.key(0), data,
                                                            test_fraction=0.2)
        self.model = bbjax.components.flax_model(
            LogisticRegression(FEATURES, CLASSES, rngs=nnx.Rngs(0)),
            optax.sgd(LEARNING_RATE), cross_entropy)
        source = bbjax.components.padded_data_source(
            self.train.x[0], self.train.y[0], int(self.train.sizes[0]), batch_size=BATCH)
        self.topology = random_regular(nodes, DEGREE, seed=0)
        weights = mixing_weights(self.topology)
        compiled = (bbjax.Compiler().bind("model", self.model).bind("data", source)
                    .bind("weights", weights).compile(DPSGDRound()))
        self.sim = Simulation(compiled, population(
            self.topology, {"data": (self.train.x, self.train.y, self.train.sizes)}))
        self.init_key, self.run_key = jax.random.split(jax.random.key(1))
        self.init = jax.jit(self.sim.init)
        self.rounds, self.done = rounds, 0
        self.states = self.fresh()
        self.state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(self.states))
        program = jax.jit(functools.partial(_scan_rounds(self.sim), count=rounds),
                          donate_argnums=0)
        started = time.perf_counter()
        self.program = program.lower(self.states, self.run_key, jnp.int32(0), self.sim.inputs,
                                     self.sim.tables).compile()
        self.compile_s = time.perf_counter() - started

    def fresh(self) -> Any:
        return self.init(self.init_key, self.sim.init_args, self.sim.inputs, self.sim.tables)

    def __call__(self) -> Any:
        self.states, metrics, _ = self.program(self.states, self.run_key,
                                               jnp.int32(self.done), self.sim.inputs,
                                               self.sim.tables)
        self.done += self.rounds
        return metrics

    def params(self, states: Any) -> tuple[np.ndarray, np.ndarray]:
        """Every node's ``(kernel [N, 60, 10], bias [N, 10])``."""
        stacked = jax.vmap(lambda s: self.model.call("params", s)[1])(states["node"]["model"])
        out = jax.device_get(stacked["out"])
        return np.asarray(out["kernel"]), np.asarray(out["bias"])

    def accuracy(self, kernel: np.ndarray, bias: np.ndarray) -> float:
        x = np.asarray(self.test.x).reshape(-1, FEATURES)
        y, mask = np.asarray(self.test.y).reshape(-1), np.asarray(self.test.mask).reshape(-1)
        return float(((np.argmax(x @ kernel + bias, -1) == y) & mask).sum() / mask.sum())


class HandDPSGD:
    """The same rounds written by hand in pure JAX (a floor for XLA on this machine): the
    nodes' gradients by ``vmap``, their neighbours' parameters by one gather, ``rounds``
    rounds in one jitted ``lax.scan``; node ``i``'s batch in round ``r`` is its real rows
    ``(10 r + 0..9) mod size_i``."""

    def __init__(self, topology: Any, train: Any, kernels: np.ndarray, biases: np.ndarray,
                 rounds: int):
        x, y, sizes = (jnp.asarray(a) for a in (train.x, train.y, train.sizes))
        neighbours = jnp.asarray(np.maximum(topology.neighbours, 0))
        weights = jnp.asarray(np.where(topology.neighbours >= 0, topology.weights[0], 0.0),
                              jnp.float32)
        own = jnp.asarray(topology.self_weights[0], jnp.float32)

        def loss(p, xb, yb):
            log_p = jax.nn.log_softmax(xb @ p[0] + p[1])
            return -jnp.mean(jnp.take_along_axis(log_p, yb[:, None], 1))

        def one(params, r):
            rows = (r * BATCH + jnp.arange(BATCH)[None]) % sizes[:, None]
            xb = jnp.take_along_axis(x, rows[:, :, None], 1)
            yb = jnp.take_along_axis(y, rows, 1)
            grads = jax.vmap(jax.grad(loss))(params, xb, yb)
            mixed = jax.tree.map(lambda a: jnp.einsum("n,n...->n...", own, a)
                                 + jnp.einsum("nk,nk...->n...", weights, a[neighbours]),
                                 params)
            return jax.tree.map(lambda m, g: m - LEARNING_RATE * g, mixed, grads), None

        self.rounds, self.done = rounds, 0
        self.params = (jnp.asarray(kernels), jnp.asarray(biases))
        self.program = jax.jit(lambda p, first: jax.lax.scan(
            one, p, first + jnp.arange(rounds))[0], donate_argnums=0)

    def __call__(self) -> Any:
        self.params = self.program(self.params, jnp.int32(self.done))
        self.done += self.rounds
        return self.params


def run_one(nodes: int, rounds: int, reps: int, accuracy_rounds: int) -> dict:
    """Build, compile, time and check one N in this process."""
    started = time.perf_counter()
    bb = BbjaxDPSGD(nodes, rounds)
    setup_s = time.perf_counter() - started - bb.compile_s
    memory = bb.program.memory_analysis()
    analysis = {name: int(getattr(memory, f"{name}_size_in_bytes"))
                for name in ("argument", "output", "alias", "temp")}
    kernels, biases = bb.params(bb.states)
    result: dict[str, Any] = {
        "nodes": nodes, "degree": DEGREE, "rounds_per_call": rounds, "compile_s": bb.compile_s,
        "setup_s": setup_s, "state_bytes": bb.state_bytes, "memory_analysis": analysis,
        "state_bytes_per_node": bb.state_bytes / nodes,
        "temp_bytes_per_edge": analysis["temp"] / (nodes * DEGREE)}
    fns: dict[str, Any] = {"bbjax": bb,
                           "jax": HandDPSGD(bb.topology, bb.train, kernels, biases, rounds)}
    python_rounds = max(1, BASELINE_MAX // nodes)
    if nodes <= BASELINE_MAX:
        fns["python"] = PythonDPSGD(bb.topology, bb.train, kernels, biases, python_rounds)
    samples = timing.interleaved(fns, reps, 1)
    per_round = {who: [s / rounds for s in samples[who]] for who in ("bbjax", "jax")}
    if "python" in samples:
        per_round["python"] = [s / python_rounds for s in samples["python"]]
    ms = {who: timing.median_ms(values) for who, values in per_round.items()}
    result.update(ms_per_round=ms, samples_ms_per_round={
        w: [v * 1e3 for v in vs] for w, vs in per_round.items()})
    result["bbjax_over_jax"] = ms["bbjax"] / ms["jax"]
    line = (f"N={nodes}: bbjax {ms['bbjax']:.3f} ms/round, hand-written jax {ms['jax']:.3f} "
            f"(bbjax / jax {result['bbjax_over_jax']:.2f})")
    if "python" in ms:
        result["speedup"] = ms["python"] / ms["bbjax"]
        result["python_rounds_per_call"] = python_rounds
        line += f", python {ms['python']:.1f} ms/round, speed-up {result['speedup']:.0f}x"
    print(line, flush=True)

    # accuracy after accuracy_rounds from the same start
    calls = max(1, accuracy_rounds // rounds)
    bb.states, bb.done = bb.fresh(), 0
    for _ in range(calls):
        jax.block_until_ready(bb())
    kernel, bias = (p.mean(0) for p in bb.params(bb.states))
    accuracy = {"rounds": calls * rounds, "initial": bb.accuracy(kernels.mean(0),
                                                                 biases.mean(0)),
                "bbjax": bb.accuracy(kernel, bias)}
    hand = HandDPSGD(bb.topology, bb.train, kernels, biases, rounds)
    for _ in range(calls):
        hand()
    accuracy["jax"] = bb.accuracy(*(np.asarray(a).mean(0) for a in hand.params))
    if nodes <= BASELINE_MAX:
        loop = PythonDPSGD(bb.topology, bb.train, kernels, biases, calls * rounds)
        loop()
        accuracy["python"] = bb.accuracy(*loop.average())
    result["accuracy"] = accuracy
    print(f"N={nodes}: average-model accuracy after {calls * rounds} rounds {accuracy}",
          flush=True)
    return result


def spawn(args: argparse.Namespace, nodes: int) -> dict:
    """``run_one`` in a fresh Python process with XLA's memory-minimizing CPU scheduler."""
    command = [sys.executable, __file__, "--child", str(nodes), "--rounds", str(args.rounds),
               "--reps", str(args.reps), "--accuracy-rounds", str(args.accuracy_rounds)]
    env = dict(os.environ)
    env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"), MEMORY_SCHEDULER]))
    done = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    sys.stdout.write("".join(ln + "\n" for ln in done.stdout.splitlines()
                             if not ln.startswith(RESULT_PREFIX)))
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"N={nodes} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=7, help="interleaved samples per N")
    p.add_argument("--rounds", type=int, default=20, help="rounds per bbjax call (one scan)")
    p.add_argument("--accuracy-rounds", type=int, default=100,
                   help="rounds before the accuracy check")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: N = 20 and 100, 5 rounds per call, 3 reps, 10 rounds")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(RESULT_PREFIX + json.dumps(run_one(args.child, args.rounds, args.reps,
                                                 args.accuracy_rounds)), flush=True)
        return
    nodes = NODES
    if args.quick:
        nodes, args.rounds, args.reps, args.accuracy_rounds = [20, 100], 5, 3, 10
    started = time.perf_counter()
    results = [spawn(args, n) for n in nodes]
    command = " ".join(["python"] + sys.argv)
    setting = (f"logreg, random_regular(N, {DEGREE}), B={BATCH}, lr {LEARNING_RATE}, "
               f"{args.rounds} rounds per scan")
    record = {"nodes": nodes, "rounds": args.rounds, "reps": args.reps,
              "accuracy_rounds": args.accuracy_rounds, "xla_flags": MEMORY_SCHEDULER,
              "results": results, "command": command}
    path = None
    for r in results:
        ms, acc, mem = r["ms_per_round"], r["accuracy"], r["memory_analysis"]
        python_ms = f"{ms['python']:.1f}" if "python" in ms else "–"
        acc_cell = " / ".join(f"{acc[w]:.3f}" if w in acc else "–"
                              for w in ("bbjax", "jax", "python")) + f" ({acc['rounds']} rounds)"
        speedup = f"**{r['speedup']:.1f}**" if "speedup" in r else "–"
        path = timing.write("decentralized_dpsgd", record, [
            str(r["nodes"]), setting, f"{ms['bbjax']:.3f}", f"{ms['jax']:.3f}",
            f"{r['bbjax_over_jax']:.2f}", python_ms, speedup,
            f"{r['compile_s']:.1f}", f"{r['state_bytes'] / 1e6:.1f}",
            f"{r['state_bytes_per_node'] / 1e3:.1f}", f"{mem['temp'] / 1e6:.2f}",
            f"{r['temp_bytes_per_edge']:.0f}", acc_cell, f"`{command}`"])
    print(f"wrote {path} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
