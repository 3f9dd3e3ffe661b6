"""Every exception bbjax raises, in one hierarchy grouped by pipeline stage.

Catch :class:`BbjaxError` for all of them, a stage's base for one stage::

    BbjaxError
    ├── IRError                      the JAX <-> ONNX round trip
    │   ├── ExportError
    │   ├── LoweringError
    │   │   └── DataDependentError
    │   └── TreeCodecError
    ├── ModuleError                  recording a Module body
    │   └── UnboundSlotError
    ├── CompileError                 compiling a Module
    │   └── CrossClassDataflowError
    ├── ArtifactError                reading a compiled artifact
    │   ├── NotCompiledError
    │   ├── PassportError
    │   └── ProgramError
    ├── InvalidArgument              a bad parameter or configuration value
    │   ├── ConfigError
    │   ├── ComponentError
    │   ├── AggregatorError
    │   ├── PrivacyError
    │   ├── CompressionError
    │   ├── SelectionError
    │   ├── TopologyError
    │   ├── DataError
    │   └── StageError
    ├── WireError                    bytes that cross a boundary
    │   └── EnvelopeError
    │       ├── TruncatedEnvelope
    │       ├── OversizedEnvelope
    │       ├── UnsupportedVersion
    │       ├── MalformedEnvelope
    │       ├── TensorEncodeError
    │       └── TensorDecodeError
    ├── NodeError                    installing and running a Node
    │   ├── InstallError
    │   ├── StepError
    │   └── SnapshotError
    ├── SimulationError              running ``simulate``
    │   └── DivergenceError
    ├── CheckpointError              saving or restoring a simulation checkpoint
    ├── PetError                     the PET secure-aggregation protocol
    │   ├── MaskingError             a scalar, weight or config masking refuses
    │   ├── AggregationError         a masked object or mask that does not fit an aggregation
    │   ├── PetDecodeError           bytes that are no valid PET message or object
    │   │   └── MultipartError       a chunk the multipart reassembler refuses
    │   ├── PetCryptoError           a key, signature or sealed box that fails
    │   └── PetStateError            a host call a PET state machine cannot take now
    └── DeployError                  running bbjax as networked processes
        ├── FrameError               bytes that are no valid signed network frame
        ├── StoreError               a persistence store that cannot be opened, read or written
        └── TransportError           a peer or server that cannot be reached or answers wrongly

A running Node never raises on remote input: what a peer sends wrongly becomes a typed
event (``docs/runtime.md``).
"""

from __future__ import annotations

from typing import Any


class BbjaxError(Exception):
    """Base class of every bbjax exception."""


# -- the JAX <-> ONNX round trip ----------------------------------------------------------


class IRError(BbjaxError):
    """A function or model could not cross between JAX and ONNX."""


class ExportError(IRError):
    """A JAX function could not be exported to ONNX.

    ``primitive`` names the JAX primitive at fault (when one is) and ``source`` the user
    code it came from.
    """

    def __init__(self, message: str, *, primitive: str | None = None, source: str | None = None):
        self.primitive = primitive
        self.source = source
        parts = [message]
        if primitive:
            parts.append(f"primitive: {primitive}")
        if source:
            parts.append(f"from: {source}")
        super().__init__("; ".join(parts))


class LoweringError(IRError):
    """An ONNX model could not be lowered to JAX (malformed, unsupported or non-jittable).

    ``node`` is the node's name, ``op`` its ``domain::op_type``.
    """

    def __init__(self, message: str, *, node: str | None = None, op: str | None = None):
        self.node = node
        self.op = op
        where = ""
        if node is not None or op is not None:
            where = f"node {node or '<unnamed>'!r} ({op or '?'}): "
        super().__init__(where + message)


class DataDependentError(LoweringError):
    """An op needs, at trace time, a value that depends on traced inputs (a data-dependent
    shape, count or branch). The model runs eagerly on concrete inputs but not under ``jit``."""


class TreeCodecError(IRError):
    """A pytree structure cannot be written to or read from JSON."""


# -- Modules and the compiler -------------------------------------------------------------


class ModuleError(BbjaxError):
    """A Module body is malformed (undeclared input, duplicate output, bad peer set…)."""


class UnboundSlotError(ModuleError):
    """A Module calls a slot that no component is bound to; the message names the slot."""


class CompileError(BbjaxError):
    """The Module cannot be compiled; the message names the op, slot or edge at fault."""


class CrossClassDataflowError(CompileError):
    """An op's data inputs live on different peer classes."""


class ArtifactError(BbjaxError):
    """A compiled artifact cannot be used as it is."""


class NotCompiledError(ArtifactError):
    """A model carries no compilation passport."""


class PassportError(ArtifactError):
    """A passport does not match its model (version, bindings, a component's fingerprint or
    a partition's bytes)."""


class ProgramError(ArtifactError):
    """An artifact's partitions do not read as a program: a missing or malformed peer
    class, phase, port or deadline annotation, or ports that no partition or two send."""


# -- bad parameters -----------------------------------------------------------------------


class InvalidArgument(BbjaxError):
    """A parameter or configuration value is of the wrong type or out of range; the message
    names it, the value given and what is allowed."""


class ConfigError(InvalidArgument):
    """A run configuration (a file, ``--set FIELD=VALUE``, a strategy) is invalid.

    ``field`` names the field at fault (when one is).
    """

    def __init__(self, message: str, *, field: str | None = None):
        self.field = field
        super().__init__(message)


class ComponentError(InvalidArgument):
    """A component was built or called against its role's contract.

    ``component`` is the component's name, ``role`` its role's value and ``method`` the
    method at fault (each when known); the message starts with them.
    """

    def __init__(
        self,
        message: str,
        *,
        component: str | None = None,
        role: str | None = None,
        method: str | None = None,
    ):
        self.component = component
        self.role = role
        self.method = method
        where = []
        if component is not None:
            where.append(f"component {component!r}" + (f" ({role})" if role else ""))
        elif role is not None:
            where.append(f"role {role}")
        if method is not None:
            where.append(f"method {method!r}")
        super().__init__(", ".join(where) + ": " + message if where else message)


class AggregatorError(InvalidArgument):
    """Invalid hyperparameters, or client inputs whose shapes do not fit the rule."""


class PrivacyError(InvalidArgument):
    """A privacy mechanism or accountant was given invalid parameters."""


class CompressionError(InvalidArgument):
    """A codec was built with invalid parameters or given a tree it cannot encode."""


class SelectionError(InvalidArgument):
    """A client selector was built with invalid parameters."""


class TopologyError(InvalidArgument):
    """A communication graph or mixing rule was given invalid parameters (a node count,
    degree, seed or rule name out of range), or a ``Topology``'s arrays do not fit (dtype,
    shape, neighbour ids, weights that are not stochastic)."""


class DataError(InvalidArgument):
    """Invalid arguments to a partitioner or generator, or a malformed data file.

    The message names the parameter or the array at fault.
    """


class StageError(InvalidArgument):
    """A model's pipeline stages do not chain: a stage cannot take the previous stage's
    output (shape, dtype or structure), or the last one's output does not fit the loss.

    ``stage`` is the index of the stage at fault; the message names it and the shapes.
    """

    def __init__(self, message: str, *, stage: int):
        self.stage = stage
        super().__init__(message)


# -- the wire -----------------------------------------------------------------------------


class WireError(BbjaxError):
    """Bytes received from, or values sent to, another process are invalid."""


class EnvelopeError(WireError):
    """Bytes could not be decoded from, or a value encoded to, the wire format.

    ``field`` names the field at fault (e.g. ``"fills[2].payload.length"``); ``offset`` is
    the byte offset of that field in the input being decoded (``None`` when encoding).
    """

    def __init__(self, message: str, *, field: str | None = None, offset: int | None = None):
        self.field = field
        self.offset = offset
        where = field or ""
        if offset is not None:
            where += f" at offset {offset}"
        super().__init__(f"{where}: {message}" if where else message)

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore, (type(self), str(self), dict(self.__dict__))


def _restore(cls: type[EnvelopeError], message: str, state: dict[str, Any]) -> EnvelopeError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class TruncatedEnvelope(EnvelopeError):
    """The input ends before the envelope it starts (or declares) does."""


class OversizedEnvelope(EnvelopeError):
    """A size or count exceeds its cap in :class:`~bbjax.runtime.Limits`.

    ``size`` is the size or count seen (or declared), ``limit`` the cap.
    """

    def __init__(
        self,
        message: str,
        *,
        size: int,
        limit: int,
        field: str | None = None,
        offset: int | None = None,
    ):
        self.size = size
        self.limit = limit
        super().__init__(message, field=field, offset=offset)


class UnsupportedVersion(EnvelopeError):
    """The envelope's format version is not the one this decoder reads.

    ``version`` is the version seen, ``supported`` the one this decoder reads.
    """

    def __init__(self, version: int, *, supported: int, offset: int):
        self.version = version
        self.supported = supported
        super().__init__(
            f"format version {version} is not supported (this decoder reads version {supported})",
            field="version",
            offset=offset,
        )


class MalformedEnvelope(EnvelopeError):
    """The bytes are not a valid envelope (bad magic, a length inconsistent with the data,
    invalid UTF-8, an empty id, bytes left over, checksum mismatch), or a value given to
    the encoder has the wrong type or range."""


class TensorEncodeError(EnvelopeError):
    """An array (or a dtype and shape) cannot be carried by the tensor format: unsupported
    dtype, rank or size over the caps, or not convertible to a NumPy array."""


class TensorDecodeError(EnvelopeError):
    """A tensor payload is invalid: unknown dtype code, rank over the cap, byte count that
    does not match the shape, a bool byte other than 0 or 1, or truncated dims."""


# -- Nodes ---------------------------------------------------------------------------------


class NodeError(BbjaxError):
    """A Node could not be installed, stepped or restored."""


class InstallError(NodeError):
    """The targets or bindings given to install do not fit the compiled artifact."""


class StepError(NodeError):
    """A partition step was called with missing states, inputs or messages."""


class SnapshotError(NodeError):
    """Snapshot bytes are malformed or do not fit the installed partitions (structure,
    shapes and dtypes of every state)."""


# -- simulation ----------------------------------------------------------------------------


class SimulationError(BbjaxError):
    """The compiled Module, population or settings given to ``simulate`` do not fit."""


class DivergenceError(SimulationError):
    """A simulated run's loss or model became non-finite.

    ``round`` is the first round (0-based) at which it did; ``history`` the rounds run so far.
    """

    def __init__(self, message: str, *, round: int, history: Any = None):
        self.round = round
        self.history = history
        super().__init__(message)


class CheckpointError(BbjaxError):
    """A simulation checkpoint is missing, corrupted, or does not fit the run resuming it."""


# -- secure aggregation (PET) ---------------------------------------------------------------


class PetError(BbjaxError):
    """The PET secure-aggregation protocol (``bbjax.protocols.pet``) refused something."""


class MaskingError(PetError, InvalidArgument):
    """A scalar, weight vector or mask configuration the masking arithmetic refuses
    (non-finite weight, negative scalar, unknown variant name, bad config bytes)."""


class AggregationError(PetError):
    """A masked object or mask does not fit an aggregation (config, length, model count,
    out-of-group values)."""


class PetDecodeError(PetError, WireError):
    """Bytes that are not a valid PET message, payload, chunk or mask object."""


class MultipartError(PetDecodeError):
    """A message chunk the multipart reassembler refuses; ``reason`` says why:
    ``"messages_limit"`` or ``"bytes_limit"`` (its memory bounds are full; nothing buffered
    changes) or ``"inconsistent"`` (the chunk contradicts its message's other chunks, which
    are dropped)."""

    def __init__(self, message: str, *, reason: str):
        self.reason = reason
        super().__init__(message)


class PetCryptoError(PetError):
    """A key, signature or sealed box fails (wrong length, bad signature, cannot open)."""


class PetStateError(PetError):
    """A host call a PET state machine cannot take in its current phase."""


# -- deployment (networked processes) ------------------------------------------------------


class DeployError(BbjaxError):
    """bbjax running as networked processes (``bbjax.deploy``) refused something."""


class FrameError(DeployError, WireError):
    """Bytes that are not a valid signed network frame (``bbjax.deploy.node.frames``)."""


class StoreError(DeployError):
    """A persistence store cannot be opened, read or written, or holds state saved under
    other settings."""


class TransportError(DeployError):
    """A server or peer cannot be reached, or answers what the protocol does not allow."""
