"""An in-memory PET network: one coordinator, named participants and a clock, for tests
and examples.

:class:`MemoryHost` plays the transport. Each :meth:`MemoryHost.tick` lets the coordinator's
time pass, then steps every live participant with a :class:`View` answered from the
coordinator (round parameters, sums, its seeds, its local model) and posts what it sends to
:meth:`Coordinator.handle`, until it is stuck; then the clock advances by ``dt``. Hooks:
:meth:`MemoryHost.drop` / :meth:`MemoryHost.drop_when` take participants off the network,
``intercept`` rewrites or loses messages in transit, :meth:`MemoryHost.inject` posts any
bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping

import numpy as np

from bbjax.errors import InvalidArgument, PetStateError
from bbjax.protocols.pet.coordinator import Coordinator, Outcome, Phase, Transition
from bbjax.protocols.pet.crypto import EncryptKeyPair, SigningKeyPair
from bbjax.protocols.pet.participant import (
    Need,
    Participant,
    ParticipantPhase,
    Progress,
    View,
)
from bbjax.protocols.pet.settings import DEFAULT_MAX_MESSAGE_SIZE, ParticipantSettings

Models = Mapping[str, np.ndarray] | Callable[[str], np.ndarray | None]
Intercept = Callable[[str, bytes], bytes | None]


def seeded_keygen(label: bytes) -> Callable[[], EncryptKeyPair]:
    """A reproducible stand-in for ``EncryptKeyPair.generate``: the i-th call gives the key
    pair of seed ``sha256(label || i)``. For tests and examples only."""
    counter = iter(range(2**63))

    def keygen() -> EncryptKeyPair:
        digest = hashlib.sha256(bytes(label) + next(counter).to_bytes(8, "big")).digest()
        return EncryptKeyPair.from_seed(digest)

    return keygen


def make_participants(count: int, *, label: bytes = b"participant",
                      scalars: Mapping[str, float] | None = None,
                      max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
                      ) -> dict[str, Participant]:
    """``count`` participants named ``p0, p1, ...`` with reproducible signing keys (seed
    ``sha256(label || name)``) and ephemeral keys; ``scalars`` maps names to scalars
    (default 1)."""
    out = {}
    for i in range(count):
        name = f"p{i}"
        keys = SigningKeyPair.from_seed(hashlib.sha256(bytes(label) + name.encode()).digest())
        scalar = 1 if scalars is None else scalars.get(name, 1)
        settings = ParticipantSettings(keys, scalar, max_message_size)
        out[name] = Participant(settings, keygen=seeded_keygen(bytes(label) + name.encode()))
    return out


@dataclasses.dataclass(frozen=True)
class Delivery:
    """A message posted at ``now`` in round ``round_id`` by ``sender`` (``None`` for an
    injected one) and the coordinator's outcome."""

    now: float
    round_id: int
    sender: str | None
    outcome: Outcome


@dataclasses.dataclass(frozen=True)
class RoundResult:
    """How round ``round_id`` ended: its ``global_model`` (``None`` if it failed), its
    ``transitions`` (from Idle -> Sum on) and, for a failed round, the ``failure``
    transition."""

    round_id: int
    global_model: np.ndarray | None
    transitions: tuple[Transition, ...]
    failure: Transition | None


class MemoryHost:
    """Connects ``coordinator`` with ``participants`` (name -> :class:`Participant`),
    whose local models ``models`` supplies (a mapping, or a function of the name that may
    answer ``None`` for not ready), starting at time ``now`` and advancing ``dt`` seconds
    per tick.

    ``intercept(name, data)`` (default none) sees every message a participant posts: it
    returns the bytes to deliver, or ``None`` to lose them (the participant retries).
    ``deliveries`` and ``transitions`` record what happened.
    """

    def __init__(self, coordinator: Coordinator, participants: Mapping[str, Participant],
                 models: Models, *, now: float = 0.0, dt: float = 1.0,
                 intercept: Intercept | None = None):
        if not isinstance(coordinator, Coordinator):
            raise InvalidArgument(f"coordinator must be a Coordinator, got "
                                  f"{type(coordinator).__name__}")
        if not all(isinstance(p, Participant) for p in participants.values()):
            raise InvalidArgument("participants must map names to Participants")
        if not (isinstance(dt, (int, float)) and dt > 0):
            raise InvalidArgument(f"dt must be positive seconds, got {dt!r}")
        self.coordinator = coordinator
        self.participants = dict(participants)
        self.models = models
        self.now = float(now)
        self.dt = float(dt)
        self.intercept = intercept
        self.dropped: set[str] = set()
        self.deliveries: list[Delivery] = []
        self.transitions: list[Transition] = list(coordinator.take_transitions())
        self._drop_when: dict[str, tuple[ParticipantPhase, bool]] = {}

    def drop(self, name: str) -> None:
        """Take ``name`` off the network now: it is never stepped again."""
        self._known(name)
        self.dropped.add(name)

    def drop_when(self, name: str, phase: ParticipantPhase) -> None:
        """Take ``name`` off the network as soon as it next enters ``phase`` (from another
        phase: a new participant, Awaiting, is dropped at ``AWAITING`` only after a task)."""
        self._known(name)
        phase = ParticipantPhase(phase)
        self._drop_when[name] = (phase, self.participants[name].phase is not phase)

    def rejoin(self, name: str) -> None:
        """Put ``name`` back on the network (undoes :meth:`drop` and :meth:`drop_when`)."""
        self._known(name)
        self.dropped.discard(name)
        self._drop_when.pop(name, None)

    def inject(self, data: bytes) -> Outcome:
        """Post ``data`` to the coordinator now, as if from outside the network."""
        round_id = self.coordinator.round_id
        outcome = self.coordinator.handle(data, self.now)
        self.deliveries.append(Delivery(self.now, round_id, None, outcome))
        self._collect()
        return outcome

    def view_for(self, name: str) -> View:
        """What the coordinator answers ``name``'s current needs."""
        p, c = self.participants[name], self.coordinator
        needs = p.needs
        model = None
        if Need.MODEL in needs:
            model = self.models(name) if callable(self.models) else self.models.get(name)
        return View(round_params=c.round_params(),
                    sums=c.sums() if Need.SUMS in needs else None,
                    seeds=c.seeds_for(p.public_key) if Need.SEEDS in needs else None,
                    model=model)

    def tick(self, max_steps: int = 1000) -> None:
        """One tick: the coordinator's time passes, each live participant steps until it is
        stuck (at most ``max_steps`` steps), then the clock advances by ``dt``."""
        self.coordinator.tick(self.now)
        self._collect()
        for name, participant in self.participants.items():
            for _ in range(max_steps):
                self._check_drop(name)
                if name in self.dropped:
                    break
                progress = participant.step(self.view_for(name))
                if participant.outbox is not None:
                    if not self._post(name, participant):
                        break  # lost in transit: retried next tick
                elif progress is not Progress.UPDATED:
                    break
        self.now += self.dt

    def run_round(self, max_ticks: int = 100_000) -> RoundResult:
        """Tick until the coordinator's current round ends; :class:`PetStateError` if it
        has not after ``max_ticks`` ticks (or the coordinator is shut down)."""
        round_id = self.coordinator.round_id
        for _ in range(max_ticks):
            if self.coordinator.phase is Phase.SHUTDOWN:
                break
            if self.coordinator.round_id != round_id:
                ended = tuple(t for t in self.transitions if t.round_id == round_id)
                failure = next((t for t in ended if t.failure is not None), None)
                model = None if failure else self.coordinator.global_model()
                return RoundResult(round_id, model, ended, failure)
            self.tick()
        raise PetStateError(f"round {round_id} did not end within {max_ticks} ticks")

    def _post(self, name: str, participant: Participant) -> bool:
        data = participant.outbox
        if self.intercept is not None:
            data = self.intercept(name, data)
        if data is None:
            participant.report_sent(False)
            return False
        round_id = self.coordinator.round_id
        outcome = self.coordinator.handle(data, self.now)
        self.deliveries.append(Delivery(self.now, round_id, name, outcome))
        self._collect()
        participant.report_sent(True)
        return True

    def _collect(self) -> None:
        self.transitions.extend(self.coordinator.take_transitions())

    def _check_drop(self, name: str) -> None:
        if name not in self._drop_when:
            return
        phase, left = self._drop_when[name]
        if self.participants[name].phase is not phase:
            self._drop_when[name] = (phase, True)
        elif left:
            self.dropped.add(name)
            del self._drop_when[name]

    def _known(self, name: str) -> None:
        if name not in self.participants:
            raise InvalidArgument(f"no participant named {name!r}")
