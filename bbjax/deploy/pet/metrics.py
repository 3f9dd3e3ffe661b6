"""The served coordinator's ``GET /metrics``: Prometheus text exposition (format 0.0.4)."""

from __future__ import annotations

import collections
from collections.abc import Mapping

from bbjax.protocols.pet.coordinator import Coordinator, Phase

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REFUSALS = ("oversized", "body_timeout", "bad_length", "bad_query")
"""The reasons of ``bbjax_pet_http_refused_total``: requests refused before the coordinator."""


class HttpRefusals:
    """Counts of requests refused by the HTTP layer, by reason."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter({r: 0 for r in REFUSALS})

    def record(self, reason: str) -> None:
        self.counts[reason] += 1


def escape(value: str) -> str:
    """``value`` as a label value: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, object]) -> str:
    return "{" + ",".join(f'{k}="{escape(str(v))}"' for k, v in labels.items()) + "}"


def render(coordinator: Coordinator, refusals: HttpRefusals, *, masks: int,
           sum_participants: int, update_participants: int) -> str:
    """The exposition of ``coordinator``'s message counts and round, the HTTP refusals,
    and this round's number of distinct masks voted, sum and update participants."""
    lines = ["# HELP bbjax_pet_messages_total Messages by round, phase, outcome and reason.",
             "# TYPE bbjax_pet_messages_total counter"]
    for (round_id, phase, kind, reason), n in coordinator.metrics.as_dict().items():
        labels = {"round": round_id, "phase": phase, "kind": kind, "reason": reason or ""}
        lines.append(f"bbjax_pet_messages_total{_labels(labels)} {n}")
    lines += ["# HELP bbjax_pet_http_refused_total Requests refused before the coordinator.",
              "# TYPE bbjax_pet_http_refused_total counter"]
    for reason, n in sorted(refusals.counts.items()):
        lines.append(f"bbjax_pet_http_refused_total{_labels({'reason': reason})} {n}")
    lines += ["# HELP bbjax_pet_round_id The round in progress.",
              "# TYPE bbjax_pet_round_id gauge", f"bbjax_pet_round_id {coordinator.round_id}",
              "# HELP bbjax_pet_phase 1 for the current phase.", "# TYPE bbjax_pet_phase gauge"]
    for phase in Phase:
        value = int(phase is coordinator.phase)
        lines.append(f"bbjax_pet_phase{_labels({'phase': phase.value})} {value}")
    for name, help_, value in (
            ("masks", "Distinct masks voted in this round.", masks),
            ("sum_participants", "Sum participants of this round.", sum_participants),
            ("update_participants", "Update participants of this round.",
             update_participants)):
        lines += [f"# HELP bbjax_pet_{name} {help_}", f"# TYPE bbjax_pet_{name} gauge",
                  f"bbjax_pet_{name} {value}"]
    return "\n".join(lines) + "\n"
