"""Secure aggregation with xaynet's PET protocol, in memory.

50 participants, each with a model of 1000 float32 weights, run PET rounds against one
coordinator (xaynet's default settings: sum probability 0.5, update 0.9, mask config
Prime/F32/B0/M3, scalar 1). Sum participants publish ephemeral keys; update participants
mask their models and seal one mask seed to each sum participant; sum participants add up
the masks and the coordinator unmasks the sum of the masked models: the mean of the
updates, without ever seeing one of them. Each round's global model is the starting point
of every participant's next local model.

Prints the phase transitions, the message counts and how far the unmasked mean is from
numpy's mean of the same float32 models.

    python examples/pet_round.py
"""

from __future__ import annotations

import argparse

import numpy as np

from bbjax.protocols.pet.coordinator import Accepted, Coordinator
from bbjax.protocols.pet.host import MemoryHost, make_participants
from bbjax.protocols.pet.message import Tag
from bbjax.protocols.pet.settings import CoordinatorSettings


def main(participants: int = 50, length: int = 1000, rounds: int = 2, seed: int = 0
         ) -> list[dict]:
    """Run ``rounds`` rounds; one summary per round (its counts and unmasking error)."""
    settings = CoordinatorSettings(model_length=length)
    coordinator = Coordinator(settings, now=0.0)
    network = make_participants(participants)
    rng = np.random.default_rng(seed)
    local_change = {name: rng.normal(0.0, 0.1, length) for name in network}
    global_model = np.zeros(length)

    def local_model(name: str) -> np.ndarray:
        return np.clip(global_model + local_change[name], -1, 1).astype(np.float32)

    host = MemoryHost(coordinator, network, local_model, dt=1.0)
    summaries = []
    for _ in range(rounds):
        result = host.run_round()
        print(f"round {result.round_id}")
        for t in result.transitions:
            failure = f" ({t.failure.value})" if t.failure else ""
            print(f"  t={t.now:6.1f}s  {t.source.value:>7} -> {t.target.value}{failure}")
        arrived = {tag: [d.sender for d in host.deliveries
                         if d.round_id == result.round_id and d.outcome == Accepted(tag)]
                   for tag in Tag}
        metrics = coordinator.metrics
        summary = {
            "round": result.round_id,
            "failed": result.failure is not None,
            "sum": len(arrived[Tag.SUM]),
            "update": len(arrived[Tag.UPDATE]),
            "sum2": len(arrived[Tag.SUM2]),
            "chunks_buffered": metrics.count("buffered", round_id=result.round_id),
            "rejected": metrics.count("rejected", round_id=result.round_id),
            "discarded": metrics.count("discarded", round_id=result.round_id),
        }
        print("  accepted: {sum} sum, {update} update, {sum2} sum2 messages; "
              "{chunks_buffered} chunks buffered, {rejected} rejected, "
              "{discarded} discarded".format(**summary))
        if result.global_model is not None:
            updates = np.stack([local_model(n).astype(np.float64) for n in arrived[Tag.UPDATE]])
            error = float(np.abs(result.global_model - updates.mean(axis=0)).max())
            summary["max_error"] = error
            print(f"  max |unmasked - numpy mean| = {error:.3g}")
            global_model = result.global_model
        summaries.append(summary)
    return summaries


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=50)
    parser.add_argument("--length", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.participants, args.length, args.rounds, args.seed)
