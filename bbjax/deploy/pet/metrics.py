"""The coordinator's ``GET /metrics`` in the Prometheus text format (0.0.4)."""

from __future__ import annotations

from collections.abc import Mapping

from bbjax.protocols.pet.coordinator import Coordinator, Phase


def _label(value: object) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: object) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in labels.items()) + "}"


def render(coordinator: Coordinator, refused: Mapping[str, int]) -> str:
    """The exposition of ``coordinator``'s message outcomes and state, and of the request
    bodies ``refused`` before they reached it (reason -> count)."""
    s = coordinator.state
    lines = ["# HELP bbjax_pet_messages_total Messages handled, by round, phase, outcome and "
             "reason.", "# TYPE bbjax_pet_messages_total counter"]
    for (round_id, phase, kind, reason), n in coordinator.metrics.as_dict().items():
        lines.append("bbjax_pet_messages_total"
                     + _labels(round=round_id, phase=phase, kind=kind, reason=reason) + f" {n}")
    lines += ["# HELP bbjax_pet_http_refused_total Request bodies refused before the "
              "coordinator saw them.", "# TYPE bbjax_pet_http_refused_total counter"]
    lines += [f"bbjax_pet_http_refused_total{_labels(reason=r)} {n}"
              for r, n in sorted(refused.items())]
    lines += ["# HELP bbjax_pet_round_id The current round.", "# TYPE bbjax_pet_round_id gauge",
              f"bbjax_pet_round_id {s.round_id}",
              "# HELP bbjax_pet_phase 1 for the current phase.", "# TYPE bbjax_pet_phase gauge"]
    lines += [f"bbjax_pet_phase{_labels(phase=p.value)} {int(p is s.phase)}" for p in Phase]
    for name, value, text in (
            ("sum_participants", len(s.sum_dict), "Sum participants accepted this round."),
            ("update_participants", len(s.updaters), "Update participants accepted."),
            ("masks", len(s.mask_votes), "Distinct masks voted for this round.")):
        lines += [f"# HELP bbjax_pet_{name} {text}", f"# TYPE bbjax_pet_{name} gauge",
                  f"bbjax_pet_{name} {value}"]
    return "\n".join(lines) + "\n"
