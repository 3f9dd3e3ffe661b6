"""The PET coordinator as a sans-IO state machine (xaynet-server's ``state_machine``).

The host hands it sealed message bytes (:meth:`Coordinator.handle`) and the time
(:meth:`Coordinator.tick`); it never reads a clock or does IO. Phases run Idle -> Sum ->
Update -> Sum2 -> Unmask -> Idle; a phase that times out, or an Unmask that finds no unique
mask, goes through Failure to Idle, which starts the next round.

Phase rules (xaynet's handler): a phase takes messages for at least ``time.min`` seconds,
accepting up to ``count.max`` (later ones are discarded), then ends as soon as it has
``count.min``; if it has fewer at ``time.max`` the round fails. Transitions happen at the
``now`` of the call that observes them.

Request pipeline, in xaynet's order: the phase takes messages at all; the sealed box opens
with the round's key; the header parses and its tag is the phase's (else discarded); the
message signature; the coordinator key in the header; the whole message parses; multipart
reassembly; task eligibility from the task signatures; the phase's own rules (phase not
full, first write wins per participant, seed dictionary and masked model fit the round).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from bbjax.errors import (
    AggregationError,
    InvalidArgument,
    MultipartError,
    PetCryptoError,
    PetDecodeError,
    PetStateError,
)
from bbjax.protocols.pet.aggregation import Aggregation
from bbjax.protocols.pet.config import MaskConfigPair
from bbjax.protocols.pet.coordinator.effects import (
    Effect,
    MaskAdded,
    ModelUnmasked,
    PhaseStarted,
    RoundStarted,
    SumAdded,
    UpdateAdded,
)
from bbjax.protocols.pet.coordinator.outcomes import (
    MESSAGE_PHASES,
    Accepted,
    Buffered,
    Discarded,
    FailureReason,
    Metrics,
    Outcome,
    Phase,
    Reason,
    Rejected,
    Transition,
)
from bbjax.protocols.pet.coordinator.state import (
    CoordinatorState,
    settings_digest,
)
from bbjax.protocols.pet.crypto import (
    ENCRYPTED_MASK_SEED_LENGTH,
    PUBLIC_KEY_LENGTH,
    SIGNATURE_LENGTH,
    EncryptKeyPair,
    next_round_seed,
)
from bbjax.protocols.pet.message import (
    CHUNK_HEADER_LENGTH,
    HEADER_LENGTH,
    Message,
    Sum,
    Sum2,
    Tag,
    Update,
    open_message,
    parse_message,
    verify_message_signature,
)
from bbjax.protocols.pet.multipart import Reassembler
from bbjax.protocols.pet.object import MaskObject
from bbjax.protocols.pet.round_params import RoundParameters
from bbjax.protocols.pet.settings import CoordinatorSettings
from bbjax.protocols.pet.sortition import verify_task

KeyGen = Callable[[], EncryptKeyPair]

_TAG_OFFSET = HEADER_LENGTH - 4  # signature | participant pk | coordinator pk | length | tag
_COORDINATOR_PK = slice(SIGNATURE_LENGTH + PUBLIC_KEY_LENGTH,
                        SIGNATURE_LENGTH + 2 * PUBLIC_KEY_LENGTH)
_TAGS = {tag.value: tag for tag in Tag}
_ACTIVE = (Phase.SUM, Phase.UPDATE, Phase.SUM2)
_NEXT = {Phase.SUM: Phase.UPDATE, Phase.UPDATE: Phase.SUM2, Phase.SUM2: Phase.UNMASK}


def _check_now(now: object) -> float:
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise InvalidArgument(f"now must be finite seconds (a float), got {now!r}")
    return float(now)


def majority_mask(votes: Mapping[bytes, int]) -> bytes | FailureReason:
    """The mask (bytes) with the most votes, if one has more than every other; else
    ``AMBIGUOUS_MASKS`` (a tie for the most) or ``NO_MASK`` (no votes)."""
    if not votes:
        return FailureReason.NO_MASK
    top = max(votes.values())
    best = [mask for mask, count in votes.items() if count == top]
    return best[0] if len(best) == 1 else FailureReason.AMBIGUOUS_MASKS


class Coordinator:
    """A PET coordinator: one :class:`CoordinatorState` value and the rules that move it.

    ``keygen`` makes each round's X25519 key pair (default: libsodium's randomness); the
    first round's seed chains from ``initial_seed`` (xaynet: 32 zero bytes). Creating a
    coordinator runs the first Idle phase, so it starts in round ``round_id``'s Sum phase at
    ``now``, holding ``global_model`` (default none) as the latest global model.

    A coordinator restarted from a store (xaynet's restore) is created with the stored
    round's id + 1, its seed as ``initial_seed`` and the stored global model: it starts a
    new round from the latest global model.
    """

    def __init__(self, settings: CoordinatorSettings, now: float, *,
                 keygen: KeyGen = EncryptKeyPair.generate, initial_seed: bytes = bytes(32),
                 round_id: int = 1, global_model: np.ndarray | None = None):
        now = _check_now(now)
        self._setup(settings, keygen)
        if not isinstance(initial_seed, bytes) or len(initial_seed) != 32:
            raise InvalidArgument("initial_seed must be 32 bytes")
        if isinstance(round_id, bool) or not isinstance(round_id, int) or round_id < 1:
            raise InvalidArgument(f"round_id must be an integer >= 1, got {round_id!r}")
        if global_model is not None:
            global_model = np.asarray(global_model, dtype=np.float64)
            if global_model.shape != (settings.model_length,):
                raise InvalidArgument(f"global_model must have shape "
                                      f"({settings.model_length},), got {global_model.shape}")
            if not np.all(np.isfinite(global_model)):
                raise InvalidArgument("global_model must be finite")
            global_model = global_model.copy()
        keys, seed = self._round_keys(initial_seed)
        self._state = CoordinatorState(
            settings_digest(settings), Phase.IDLE, round_id, keys, seed, now, now,
            self._reassembler(Phase.SUM, 0), global_model=global_model)
        self._log(Phase.IDLE, Phase.SUM)
        self._state.phase = Phase.SUM
        self._effects.append(RoundStarted(round_id, seed))

    def _setup(self, settings: CoordinatorSettings, keygen: KeyGen) -> None:
        if not isinstance(settings, CoordinatorSettings):
            raise InvalidArgument(f"settings must be CoordinatorSettings, got "
                                  f"{type(settings).__name__}")
        if not callable(keygen):
            raise InvalidArgument(f"keygen must be callable, got {keygen!r}")
        self.settings = settings
        self._keygen = keygen
        self._config = MaskConfigPair.from_config(settings.mask)
        self._transitions: list[Transition] = []
        self._effects: list[Effect] = []
        self.metrics = Metrics()

    @classmethod
    def restore(cls, data: bytes, settings: CoordinatorSettings, *,
                keygen: KeyGen = EncryptKeyPair.generate) -> Coordinator:
        """The coordinator whose :meth:`state_bytes` are ``data``, under the same
        ``settings`` (:class:`PetStateError` if they differ; :class:`PetDecodeError` if
        ``data`` is no coordinator state). Metrics start from zero."""
        self = cls.__new__(cls)
        self._setup(settings, keygen)
        state = CoordinatorState.from_bytes(data, settings)
        if state.settings_digest != settings_digest(settings):
            raise PetStateError("the state was saved under other coordinator settings")
        self._state = state
        return self

    # -- what the host reads (xaynet's REST API) ------------------------------------------

    @property
    def state(self) -> CoordinatorState:
        """The current state (read it; copy it with :meth:`state_bytes`)."""
        return self._state

    @property
    def phase(self) -> Phase:
        """The current phase."""
        return self._state.phase

    @property
    def round_id(self) -> int:
        """The current round (1 for the first)."""
        return self._state.round_id

    def state_bytes(self) -> bytes:
        """The canonical bytes of the state, for :meth:`restore`."""
        return self._state.to_bytes()

    def round_params(self) -> RoundParameters:
        """This round's parameters (``GET /params``)."""
        s, st = self._state, self.settings
        return RoundParameters(s.keys.public, st.sum.prob, st.update.prob, s.seed,
                               self._config, st.model_length)

    def sums(self) -> dict[bytes, bytes] | None:
        """The sum dictionary, sum pk -> ephemeral pk, once the Sum phase is over and until
        Sum2 ends (``GET /sums``); ``None`` otherwise."""
        s = self._state
        return dict(s.sum_dict) if s.phase in (Phase.UPDATE, Phase.SUM2) else None

    def seeds_for(self, sum_pk: bytes) -> dict[bytes, bytes] | None:
        """The encrypted mask seeds for one sum participant, update pk -> seed, during Sum2
        (``GET /seeds?pk=``); ``None`` otherwise or for a pk not in the sum dictionary."""
        s = self._state
        if s.phase is not Phase.SUM2 or not isinstance(sum_pk, bytes):
            return None
        column = s.seed_dict.get(sum_pk)
        return None if column is None else dict(column)

    def global_model(self) -> np.ndarray | None:
        """The latest unmasked global model (``GET /model``), ``None`` before the first."""
        model = self._state.global_model
        return None if model is None else model.copy()

    def take_transitions(self) -> list[Transition]:
        """The phase transitions since the last call, oldest first."""
        out, self._transitions = self._transitions, []
        return out

    def take_effects(self) -> list[Effect]:
        """What changed since the last call that a store keeps (:mod:`.effects`), in order:
        rounds and phases begun, participants accepted, masks voted, models unmasked."""
        out, self._effects = self._effects, []
        return out

    # -- what the host calls ------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Let time pass to ``now``: end phases whose time is up."""
        self._advance(self._clock(now))

    def handle(self, data: bytes, now: float) -> Outcome:
        """Take one sealed message (``POST /message``) at ``now``; its outcome is also
        counted in :attr:`metrics` under the phase that judged it."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"a message must be bytes, got {type(data).__name__}")
        now = self._clock(now)
        self._advance(now)
        round_id, phase = self._state.round_id, self._state.phase
        outcome = self._process(bytes(data))
        self.metrics.record(round_id, phase, outcome)
        self._advance(now)
        return outcome

    def shutdown(self, now: float) -> None:
        """Stop: drop the round's dictionaries; every later message is discarded."""
        self._clock(now)
        s = self._state
        if s.phase is Phase.SHUTDOWN:
            return
        self._log(s.phase, Phase.SHUTDOWN)
        self._clear_round()
        s.phase = Phase.SHUTDOWN
        self._effects.append(PhaseStarted(s.round_id, Phase.SHUTDOWN, s.now))

    # -- time ---------------------------------------------------------------------------

    def _clock(self, now: object) -> float:
        now = _check_now(now)
        if now < self._state.now:
            raise PetStateError(f"time went backwards: now={now} after {self._state.now}")
        self._state.now = now
        return now

    def _phase_settings(self, phase: Phase):
        return {Phase.SUM: self.settings.sum, Phase.UPDATE: self.settings.update,
                Phase.SUM2: self.settings.sum2}[phase]

    def _accepted(self) -> int:
        s = self._state
        return {Phase.SUM: len(s.sum_dict), Phase.UPDATE: len(s.updaters),
                Phase.SUM2: len(s.mask_senders)}[s.phase]

    def _advance(self, now: float) -> None:
        while self._state.phase in _ACTIVE:
            s = self._state
            rules = self._phase_settings(s.phase)
            elapsed = now - s.phase_start
            if elapsed >= rules.time.min and self._accepted() >= rules.count.min:
                self._end_phase(now)
            elif elapsed >= rules.time.max and now > s.phase_start:
                self._fail(FailureReason.PHASE_TIMEOUT, now)
            else:
                return

    def _end_phase(self, now: float) -> None:
        s = self._state
        target = _NEXT[s.phase]
        self._log(s.phase, target)
        if target is Phase.UPDATE:
            s.seed_dict = {pk: {} for pk in s.sum_dict}
            s.aggregation = Aggregation(self._config, self.settings.model_length)
        s.phase, s.phase_start = target, now
        self._effects.append(PhaseStarted(s.round_id, target, now))
        if target is Phase.UNMASK:
            self._unmask(now)
        else:
            s.reassembler = self._reassembler(target, len(s.sum_dict))

    def _unmask(self, now: float) -> None:
        s = self._state
        best = majority_mask(s.mask_votes)
        if isinstance(best, FailureReason):
            return self._fail(best, now)
        try:
            model = s.aggregation.unmask(MaskObject.from_bytes(best))
        except (AggregationError, PetDecodeError):
            return self._fail(FailureReason.UNMASKING_FAILED, now)
        s.global_model = model
        self._effects.append(ModelUnmasked(s.round_id, model.copy()))
        self._log(Phase.UNMASK, Phase.IDLE)
        self._idle(now)

    def _fail(self, reason: FailureReason, now: float) -> None:
        self._log(self._state.phase, Phase.FAILURE, reason)
        self._log(Phase.FAILURE, Phase.IDLE)
        self._idle(now)

    def _idle(self, now: float) -> None:
        s = self._state
        s.keys, s.seed = self._round_keys(s.seed)
        s.round_id += 1
        self._clear_round()
        s.phase, s.phase_start = Phase.SUM, now
        self._log(Phase.IDLE, Phase.SUM)
        self._effects.append(RoundStarted(s.round_id, s.seed))

    def _round_keys(self, old_seed: bytes) -> tuple[EncryptKeyPair, bytes]:
        keys = self._keygen()
        if not isinstance(keys, EncryptKeyPair):
            raise InvalidArgument(f"keygen must return an EncryptKeyPair, got "
                                  f"{type(keys).__name__}")
        seed = next_round_seed(keys.secret, old_seed, self.settings.sum.prob,
                               self.settings.update.prob)
        return keys, seed

    def _clear_round(self) -> None:
        s = self._state
        s.sum_dict, s.seed_dict, s.updaters = {}, {}, set()
        s.aggregation, s.mask_votes, s.mask_senders = None, {}, set()
        s.reassembler = self._reassembler(Phase.SUM, 0)

    def _reassembler(self, phase: Phase, nb_sum: int) -> Reassembler:
        """Buffers for one phase: ``count.max`` messages of the phase's largest payload,
        each chunk of it as small as 2 data bytes (5 bytes buffered per payload byte)."""
        vect, unit = self._config.vect, self._config.unit
        mask = 12 + self.settings.model_length * vect.bytes_per_number + 4 + unit.bytes_per_number
        payload = {Phase.SUM: SIGNATURE_LENGTH + PUBLIC_KEY_LENGTH,
                   Phase.UPDATE: (2 * SIGNATURE_LENGTH + mask + 4
                                  + nb_sum * (PUBLIC_KEY_LENGTH + ENCRYPTED_MASK_SEED_LENGTH)),
                   Phase.SUM2: SIGNATURE_LENGTH + mask}[phase]
        per_message = payload + CHUNK_HEADER_LENGTH * (payload + 1) // 2
        count = self._phase_settings(phase).count.max
        return Reassembler(max_bytes=count * per_message, max_messages=count)

    def _log(self, source: Phase, target: Phase, failure: FailureReason | None = None) -> None:
        s = self._state
        self._transitions.append(Transition(s.round_id, source, target, s.now, failure))

    # -- the request pipeline ------------------------------------------------------------

    def _process(self, data: bytes) -> Outcome:
        s = self._state
        if s.phase is Phase.SHUTDOWN:
            return Discarded(Reason.SHUT_DOWN)
        try:
            plain = open_message(data, s.keys)
        except PetCryptoError as err:
            return Rejected(Reason.UNDECRYPTABLE, str(err))
        if len(plain) < HEADER_LENGTH or plain[_TAG_OFFSET] not in _TAGS:
            return Rejected(Reason.MALFORMED, "no PET message header")
        tag = _TAGS[plain[_TAG_OFFSET]]
        if MESSAGE_PHASES[tag] is not s.phase:
            return Discarded(Reason.WRONG_PHASE,
                             f"a {tag.name} message in the {s.phase.value} phase")
        try:
            if not verify_message_signature(plain):
                return Rejected(Reason.BAD_SIGNATURE)
        except PetDecodeError as err:
            return Rejected(Reason.MALFORMED, str(err))
        if plain[_COORDINATOR_PK] != s.keys.public:
            return Rejected(Reason.WRONG_COORDINATOR_KEY)
        try:
            message = parse_message(plain)
        except PetDecodeError as err:
            return Rejected(Reason.MALFORMED, str(err))
        try:
            whole = s.reassembler.add(message)
        except MultipartError as err:
            if err.reason == "inconsistent":
                return Rejected(Reason.MULTIPART_INCONSISTENT, str(err))
            return Discarded(Reason.MULTIPART_FULL, str(err))
        except PetDecodeError as err:
            return Rejected(Reason.MALFORMED, str(err))
        if whole is None:
            return Buffered(tag)
        return self._validate_task(whole) or self._apply(whole)

    def _validate_task(self, message: Message) -> Rejected | None:
        payload = message.payload
        update_sig = payload.update_signature if isinstance(payload, Update) else None
        task = verify_task(message.participant_pk, payload.sum_signature, update_sig,
                           self.round_params())
        if isinstance(payload, Update):
            return None if task == "update" else Rejected(Reason.NOT_UPDATE_ELIGIBLE)
        return None if task == "sum" else Rejected(Reason.NOT_SUM_ELIGIBLE)

    def _apply(self, message: Message) -> Outcome:
        s = self._state
        rules = self._phase_settings(s.phase)
        if self._accepted() >= rules.count.max:
            return Discarded(Reason.PHASE_FULL, f"{rules.count.max} messages accepted already")
        pk, payload = message.participant_pk, message.payload
        if isinstance(payload, Sum):
            if pk in s.sum_dict:
                return Rejected(Reason.DUPLICATE_PARTICIPANT)
            s.sum_dict[pk] = payload.ephm_pk
            self._effects.append(SumAdded(s.round_id, pk, payload.ephm_pk))
        elif isinstance(payload, Update):
            try:
                s.aggregation.validate_aggregation(payload.masked_model)
            except AggregationError as err:
                return Rejected(Reason.MASK_MISMATCH, str(err))
            if set(payload.local_seed_dict) != set(s.sum_dict):
                return Rejected(Reason.SEED_DICT_MISMATCH,
                                f"{len(payload.local_seed_dict)} seeds for "
                                f"{len(s.sum_dict)} sum participants")
            if pk in s.updaters:
                return Rejected(Reason.DUPLICATE_PARTICIPANT)
            s.updaters.add(pk)
            for sum_pk, seed in payload.local_seed_dict.items():
                s.seed_dict[sum_pk][pk] = seed
            s.aggregation.aggregate(payload.masked_model)
            self._effects.append(UpdateAdded(s.round_id, pk, dict(payload.local_seed_dict)))
        elif isinstance(payload, Sum2):
            if pk not in s.sum_dict:
                return Rejected(Reason.UNKNOWN_SUM_PARTICIPANT)
            if pk in s.mask_senders:
                return Rejected(Reason.DUPLICATE_PARTICIPANT)
            try:
                s.aggregation.validate_unmasking(payload.model_mask)
            except AggregationError as err:
                return Rejected(Reason.MASK_MISMATCH, str(err))
            key = payload.model_mask.to_bytes()
            s.mask_votes[key] = s.mask_votes.get(key, 0) + 1
            s.mask_senders.add(pk)
            self._effects.append(MaskAdded(s.round_id, pk, key))
        return Accepted(message.tag)
