"""The PET participant as a sans-IO state machine (xaynet-sdk's ``state_machine``).

Phases: NewRound -> Sum -> SendingSum -> Sum2 -> SendingSum2 -> Awaiting for a sum
participant, NewRound -> Update -> SendingUpdate -> Awaiting for an update participant,
NewRound -> Awaiting for one selected for neither.

The participant does no IO. Each :meth:`Participant.step` takes a :class:`View`: what the
host last fetched from the coordinator (round parameters, sum dictionary, this
participant's seeds) and the local model, each ``None`` when not available; :attr:`needs`
says which of them the current phase reads. One step does one piece of work. Sending is
one chunk at a time: a step puts the next sealed chunk in :attr:`outbox`, the host posts
it and calls :meth:`Participant.report_sent`; a failed chunk is offered again next step.
Round parameters that differ from the ones the participant holds (a new round) restart
it at NewRound, whatever it was doing.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction

import numpy as np

from bbjax.errors import (
    AggregationError,
    InvalidArgument,
    MaskingError,
    PetCryptoError,
    PetDecodeError,
    PetStateError,
)
from bbjax.protocols.pet import _codec
from bbjax.protocols.pet.aggregation import Aggregation
from bbjax.protocols.pet.crypto import (
    SECRET_KEY_LENGTH,
    SEED_LENGTH,
    SIGNATURE_LENGTH,
    EncryptKeyPair,
    SigningKeyPair,
    decrypt_seed,
    encrypt_seed,
)
from bbjax.protocols.pet.masking import Masker
from bbjax.protocols.pet.message import Sum, Sum2, Update, seal_message
from bbjax.protocols.pet.multipart import encode_messages
from bbjax.protocols.pet.round_params import RoundParameters
from bbjax.protocols.pet.settings import ParticipantSettings
from bbjax.protocols.pet.sortition import is_eligible, sum_signature, update_signature

FORMAT = "bbjax.pet.participant/1"

KeyGen = Callable[[], EncryptKeyPair]


class ParticipantPhase(enum.Enum):
    """The participant's phases (xaynet-sdk's ``StateMachine`` variants)."""

    NEW_ROUND = "NewRound"
    SUM = "Sum"
    SENDING_SUM = "SendingSum"
    SUM2 = "Sum2"
    SENDING_SUM2 = "SendingSum2"
    UPDATE = "Update"
    SENDING_UPDATE = "SendingUpdate"
    AWAITING = "Awaiting"


_SUM_PHASES = (ParticipantPhase.SUM, ParticipantPhase.SENDING_SUM, ParticipantPhase.SUM2,
               ParticipantPhase.SENDING_SUM2)
_UPDATE_PHASES = (ParticipantPhase.UPDATE, ParticipantPhase.SENDING_UPDATE)
_SENDING = {ParticipantPhase.SENDING_SUM: ParticipantPhase.SUM2,
            ParticipantPhase.SENDING_SUM2: ParticipantPhase.AWAITING,
            ParticipantPhase.SENDING_UPDATE: ParticipantPhase.AWAITING}


class Progress(enum.Enum):
    """What one :meth:`Participant.step` did."""

    UPDATED = "updated"
    """The participant changed (a new phase, or a chunk put in the outbox)."""
    STUCK = "stuck"
    """It could not move: something it needs is missing from the view (see
    :attr:`Participant.needs`), or the outbox chunk still awaits its send report."""
    CONTINUE = "continue"
    """Nothing to do until the next round (Awaiting); keep stepping with fresh round
    parameters."""


class Need(enum.Enum):
    """A :class:`View` entry the current phase reads."""

    ROUND_PARAMS = "round_params"
    SUMS = "sums"
    SEEDS = "seeds"
    MODEL = "model"


@dataclasses.dataclass(frozen=True)
class View:
    """What the host supplies to one step; ``None`` means not available (not fetched,
    not published yet, or the fetch failed).

    ``round_params`` is ``GET /params``; ``sums`` is ``GET /sums`` (sum pk -> ephemeral
    pk); ``seeds`` is ``GET /seeds?pk=<own pk>`` (update pk -> encrypted mask seed);
    ``model`` is the local model to contribute (xaynet's ``ModelStore::load_model``).
    """

    round_params: RoundParameters | None = None
    sums: Mapping[bytes, bytes] | None = None
    seeds: Mapping[bytes, bytes] | None = None
    model: np.ndarray | Sequence[float] | None = None


@dataclasses.dataclass(eq=False)
class ParticipantState:
    """Everything a participant knows between steps, except its settings.

    ``round_params`` are the parameters of the round it works on; ``ephm_keys`` are a sum
    participant's ephemeral keys; ``chunks`` are the sealed messages of a Sending phase,
    of which the first ``sent`` have been delivered.
    """

    phase: ParticipantPhase = ParticipantPhase.AWAITING
    round_params: RoundParameters | None = None
    sum_signature: bytes | None = None
    update_signature: bytes | None = None
    ephm_keys: EncryptKeyPair | None = None
    chunks: tuple[bytes, ...] = ()
    sent: int = 0


class Participant:
    """A PET participant with its own :class:`ParticipantSettings`.

    ``keygen`` makes a sum participant's ephemeral X25519 keys (default: libsodium's
    randomness). A new participant is Awaiting with no round parameters; its first step
    with round parameters starts it at NewRound.
    """

    def __init__(self, settings: ParticipantSettings, *,
                 keygen: KeyGen = EncryptKeyPair.generate):
        if not isinstance(settings, ParticipantSettings):
            raise InvalidArgument(f"settings must be ParticipantSettings, got "
                                  f"{type(settings).__name__}")
        if not callable(keygen):
            raise InvalidArgument(f"keygen must be callable, got {keygen!r}")
        self.settings = settings
        self._keygen = keygen
        self._state = ParticipantState()
        self._in_flight = False

    # -- what the host reads -------------------------------------------------------------

    @property
    def state(self) -> ParticipantState:
        """The current state (read it; copy it with :meth:`save`)."""
        return self._state

    @property
    def phase(self) -> ParticipantPhase:
        """The current phase."""
        return self._state.phase

    @property
    def public_key(self) -> bytes:
        """The participant's Ed25519 public key (its identity in the round)."""
        return self.settings.keys.public

    @property
    def task(self) -> str | None:
        """``"sum"`` or ``"update"`` while it works on that task this round, else ``None``."""
        if self._state.phase in _SUM_PHASES:
            return "sum"
        if self._state.phase in _UPDATE_PHASES:
            return "update"
        return None

    @property
    def needs(self) -> frozenset[Need]:
        """The :class:`View` entries the next step reads (round parameters always)."""
        extra = {ParticipantPhase.UPDATE: {Need.SUMS, Need.MODEL},
                 ParticipantPhase.SUM2: {Need.SEEDS}}.get(self._state.phase, set())
        return frozenset({Need.ROUND_PARAMS, *extra})

    @property
    def outbox(self) -> bytes | None:
        """The sealed chunk to post now (until :meth:`report_sent`), or ``None``."""
        s = self._state
        return s.chunks[s.sent] if self._in_flight else None

    # -- what the host calls -------------------------------------------------------------

    def report_sent(self, ok: bool) -> None:
        """Report whether posting :attr:`outbox` succeeded; a failed chunk is offered again
        by the next step."""
        if not isinstance(ok, bool):
            raise InvalidArgument(f"ok must be a bool, got {ok!r}")
        if not self._in_flight:
            raise PetStateError("report_sent without a chunk in the outbox")
        self._in_flight = False
        if ok:
            self._state.sent += 1

    def step(self, view: View) -> Progress:
        """Do the next piece of work with what ``view`` supplies."""
        if not isinstance(view, View):
            raise InvalidArgument(f"step takes a View, got {type(view).__name__}")
        params = view.round_params
        if params is None:
            return Progress.STUCK
        if not isinstance(params, RoundParameters):
            raise InvalidArgument(f"View.round_params must be RoundParameters, got "
                                  f"{type(params).__name__}")
        s = self._state
        if params != s.round_params:
            self._state = ParticipantState(ParticipantPhase.NEW_ROUND, params)
            self._in_flight = False
            return Progress.UPDATED
        if self._in_flight:
            return Progress.STUCK
        if s.phase is ParticipantPhase.AWAITING:
            return Progress.CONTINUE
        if s.phase is ParticipantPhase.NEW_ROUND:
            self._new_round()
        elif s.phase is ParticipantPhase.SUM:
            self._send(Sum(s.sum_signature, s.ephm_keys.public), ParticipantPhase.SENDING_SUM)
        elif s.phase is ParticipantPhase.UPDATE:
            if view.sums is None or view.model is None:
                return Progress.STUCK
            self._update(_mapping(view.sums, "sums"), view.model)
        elif s.phase is ParticipantPhase.SUM2:
            if view.seeds is None:
                return Progress.STUCK
            self._sum2(_mapping(view.seeds, "seeds"))
        elif s.sent < len(s.chunks):
            self._in_flight = True
        elif _SENDING[s.phase] is ParticipantPhase.SUM2:
            s.phase, s.chunks, s.sent = ParticipantPhase.SUM2, (), 0
        else:
            self._await_next_round()
        return Progress.UPDATED

    # -- phases ---------------------------------------------------------------------------

    def _new_round(self) -> None:
        s, keys = self._state, self.settings.keys
        s.sum_signature = sum_signature(keys, s.round_params.seed)
        if is_eligible(s.sum_signature, s.round_params.sum):
            ephm = self._keygen()
            if not isinstance(ephm, EncryptKeyPair):
                raise InvalidArgument(f"keygen must return an EncryptKeyPair, got "
                                      f"{type(ephm).__name__}")
            s.ephm_keys, s.phase = ephm, ParticipantPhase.SUM
            return
        s.update_signature = update_signature(keys, s.round_params.seed)
        if is_eligible(s.update_signature, s.round_params.update):
            s.phase = ParticipantPhase.UPDATE
        else:
            s.phase, s.sum_signature, s.update_signature = ParticipantPhase.AWAITING, None, None

    def _update(self, sums: Mapping[bytes, bytes], model: np.ndarray | Sequence[float]) -> None:
        params = self._state.round_params
        weights = np.asarray(model)
        if weights.shape != (params.model_length,):
            raise MaskingError(f"the local model has shape {weights.shape}, the round needs "
                               f"({params.model_length},)")
        seed, masked = Masker(params.mask_config).mask(self.settings.scalar, weights)
        try:
            local_seed_dict = {pk: encrypt_seed(seed, ephm_pk) for pk, ephm_pk in sums.items()}
            payload = Update(self._state.sum_signature, self._state.update_signature, masked,
                             local_seed_dict)
        except PetCryptoError:
            # a sum dictionary whose keys cannot be sealed to: nothing to send this round
            return self._await_next_round()
        self._send(payload, ParticipantPhase.SENDING_UPDATE)

    def _sum2(self, seeds: Mapping[bytes, bytes]) -> None:
        s = self._state
        params = s.round_params
        aggregation = Aggregation(params.mask_config, params.model_length)
        try:
            for encrypted in seeds.values():
                mask = decrypt_seed(encrypted, s.ephm_keys).derive_mask(
                    params.model_length, params.mask_config)
                aggregation.aggregate(mask)
        except (PetCryptoError, MaskingError, AggregationError):
            # xaynet: a seed that does not decrypt or a mask that does not aggregate
            return self._await_next_round()
        self._send(Sum2(s.sum_signature, aggregation.masked_object()),
                   ParticipantPhase.SENDING_SUM2)

    def _send(self, payload: Sum | Update | Sum2, phase: ParticipantPhase) -> None:
        s = self._state
        pk = s.round_params.pk
        messages = encode_messages(payload, self.settings.keys, pk,
                                   self.settings.max_message_size)
        try:
            s.chunks = tuple(seal_message(m, pk) for m in messages)
        except PetCryptoError:
            return self._await_next_round()
        s.sent, s.phase = 0, phase

    def _await_next_round(self) -> None:
        s = self._state
        self._state = ParticipantState(ParticipantPhase.AWAITING, s.round_params)

    # -- save / restore ---------------------------------------------------------------------

    def save(self) -> bytes:
        """The participant's settings (its secret signing key included) and state, as
        canonical bytes for :meth:`restore`. A chunk in the outbox counts as not sent."""
        s, st = self._state, self.settings
        return _codec.dump({
            "format": FORMAT,
            "keys": st.keys.seed.hex(),
            "scalar": [st.scalar.numerator, st.scalar.denominator],
            "max_message_size": st.max_message_size,
            "phase": s.phase.value,
            "round_params": _codec.hexed(None if s.round_params is None
                                         else s.round_params.to_bytes()),
            "sum_signature": _codec.hexed(s.sum_signature),
            "update_signature": _codec.hexed(s.update_signature),
            "ephm_secret": _codec.hexed(None if s.ephm_keys is None else s.ephm_keys.secret),
            "chunks": [c.hex() for c in s.chunks],
            "sent": s.sent,
        })

    @classmethod
    def restore(cls, data: bytes, *, keygen: KeyGen = EncryptKeyPair.generate) -> Participant:
        """The participant :meth:`save` wrote; anything else raises
        :class:`~bbjax.errors.PetDecodeError` naming the field."""
        f = _codec.load(data, "participant", FORMAT)
        keys = SigningKeyPair.from_seed(f.bytes("keys", SEED_LENGTH))
        scalar = f.list("scalar")
        if (len(scalar) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                        for v in scalar) or scalar[1] <= 0
                or Fraction(*scalar).denominator != scalar[1]):
            raise f.fail("scalar", "expected [numerator, denominator] in lowest terms")
        size = f.obj.get("max_message_size")
        size = None if size is None else f.int("max_message_size")
        try:
            settings = ParticipantSettings(keys, Fraction(*scalar), size)
        except InvalidArgument as err:
            raise PetDecodeError(f"participant settings: {err}") from None
        try:
            phase = ParticipantPhase(f.str("phase"))
        except ValueError:
            raise f.fail("phase", f"unknown phase {f.obj['phase']!r}") from None
        raw_params = f.bytes("round_params", optional=True)
        params = None if raw_params is None else RoundParameters.from_bytes(raw_params)
        secret = f.bytes("ephm_secret", SECRET_KEY_LENGTH, optional=True)
        chunks = tuple(_codec.to_bytes(c, f"participant.chunks[{i}]")
                       for i, c in enumerate(f.list("chunks")))
        state = ParticipantState(
            phase, params, f.bytes("sum_signature", SIGNATURE_LENGTH, optional=True),
            f.bytes("update_signature", SIGNATURE_LENGTH, optional=True),
            None if secret is None else EncryptKeyPair.from_secret(secret),
            chunks, f.int("sent", 0, len(chunks)))
        f.done("format", "keys", "scalar", "max_message_size", "phase", "round_params",
               "sum_signature", "update_signature", "ephm_secret", "chunks", "sent")
        _check_consistent(state)
        participant = cls(settings, keygen=keygen)
        participant._state = state
        return participant


def _mapping(value: object, name: str) -> Mapping[bytes, bytes]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"View.{name} must be a mapping, got {type(value).__name__}")
    return value


def _check_consistent(s: ParticipantState) -> None:
    def fail(why: str) -> PetDecodeError:
        return PetDecodeError(f"participant state ({s.phase.value} phase): {why}")

    if s.round_params is None and s.phase is not ParticipantPhase.AWAITING:
        raise fail("no round parameters")
    has = (s.sum_signature is not None, s.update_signature is not None,
           s.ephm_keys is not None)
    want = ((True, False, True) if s.phase in _SUM_PHASES
            else (True, True, False) if s.phase in _UPDATE_PHASES
            else (False, False, False))
    if has != want:
        raise fail("task signatures or ephemeral keys do not fit the phase")
    if (s.phase in _SENDING) != bool(s.chunks):
        raise fail("chunks belong to the Sending phases, which have at least one")
