"""A component: a role, a state initializer and pure methods over that state.

``Component(role, init, methods)``: ``init(key, *args)`` returns the state pytree; each
method is ``fn(state, *inputs) -> (state, outputs)``, pure, jittable and vmappable (no
Python branching on traced values, fixed shapes). Construction checks the methods against
the role's contract (:mod:`bbjax.components.roles`); :meth:`Component.call` also checks
what a method returns. :attr:`Component.fingerprint` identifies what a component is; the
compiler records it in the passport for each slot.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jax

import bbjax.onnx.ops  # noqa: F401  (fills the op table that Backend keys are checked against)
from bbjax.errors import ComponentError
from bbjax.components.roles import MethodSpec, Role, contract
from bbjax.onnx.ops.registry import DEFAULT_DOMAINS, OP_TABLE

PyTree = Any
OpKey = tuple[str, str]


@dataclass(frozen=True, eq=False)
class Component:
    """A role, ``init(key, *args) -> state`` and ``methods`` (name -> ``fn``).

    ``role`` may be given as a :class:`Role` or its value (``"aggregator"``); ``name``
    (default: the role's value) identifies the component in errors. ``config`` holds the
    JSON-able hyperparameters a factory built it with (learning rate, batch size…); it is
    part of :attr:`fingerprint` and stored as a read-only copy. For a Backend,
    ``methods`` maps ONNX op keys ``(domain, op_type)`` to ``impl(ctx, *inputs)``; the
    domain ``"ai.onnx"`` is stored as ``""`` like the op table, a default-domain key must
    name an op the lowering knows, and other domains may add ops.

    Raises :class:`ComponentError` naming the component, role and method when the role is
    unknown, ``init`` or a method is not callable, a required method is missing, a method
    name is not in a closed contract (or, for a Protocol, not an identifier), a Protocol
    has no methods, a Backend key is not a valid op key, or ``config`` is not a mapping
    of str keys to JSON values (no NaN or infinity).
    """

    role: Role
    init: Callable[..., PyTree]
    methods: Mapping[Any, Callable[..., Any]]
    name: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        role = _as_role(self.role, self.name)
        name = self.name or role.value
        object.__setattr__(self, "role", role)
        object.__setattr__(self, "name", name)
        if not callable(self.init):
            raise ComponentError("init is not callable", component=name, role=role.value)
        if not isinstance(self.methods, Mapping):
            raise ComponentError(
                f"methods must be a mapping, got {type(self.methods).__name__}",
                component=name,
                role=role.value,
            )
        if role is Role.BACKEND:
            methods = _check_op_overrides(self.methods, name)
        else:
            methods = _check_methods(self.methods, role, name)
        object.__setattr__(self, "methods", MappingProxyType(methods))
        object.__setattr__(self, "config", _check_config(self.config, name, role))

    @functools.cached_property
    def abstract_state(self) -> PyTree:
        """The state as ``jax.ShapeDtypeStruct`` leaves: ``jax.eval_shape(init, key(0))``."""
        return jax.eval_shape(self.init, jax.random.key(0))

    @functools.cached_property
    def fingerprint_parts(self) -> Mapping[str, str]:
        """The SHA-256 hex digest of each part of :attr:`fingerprint`: ``role``, ``name``,
        ``state`` (tree structure, leaf paths, shapes and dtypes of :attr:`abstract_state`;
        for a DataSource without each leaf's leading axis, which counts the peer's own
        examples), ``methods`` (their names) and ``config``."""
        leaves, treedef = jax.tree_util.tree_flatten_with_path(self.abstract_state)
        per_peer = self.role is Role.DATA_SOURCE
        state = {
            "tree": _structure(treedef),
            "leaves": [[jax.tree_util.keystr(path),
                        ["*", *leaf.shape[1:]] if per_peer and leaf.shape else list(leaf.shape),
                        str(leaf.dtype)]
                       for path, leaf in leaves],
        }
        parts = {
            "role": self.role.value,
            "name": self.name,
            "state": state,
            "methods": sorted(_method_name(k) for k in self.methods),
            "config": dict(self.config),
        }
        return MappingProxyType({part: digest(value) for part, value in parts.items()})

    @functools.cached_property
    def fingerprint(self) -> str:
        """What the component is, as a SHA-256 hex digest of :attr:`fingerprint_parts`'
        canonical JSON: the same in every process for the same role, name, state shapes,
        method names and config."""
        return digest(dict(self.fingerprint_parts))

    def call(self, method: str, state: PyTree, *inputs: Any) -> tuple[PyTree, Any]:
        """Run ``method`` and check its result.

        Raises :class:`ComponentError` when the component has no such method, the number
        of inputs differs from the contract's, the result is not a ``(state, outputs)``
        pair, the new state's tree structure, shapes or dtypes differ from the old one's,
        or ``outputs`` does not have the contract's arity.
        """
        fn = self._method(method)
        spec = contract(self.role).spec(method)
        if spec is not None and spec.inputs is not None and len(inputs) != len(spec.inputs):
            raise self._error(
                f"takes {len(spec.inputs)} input(s) after state, got {len(inputs)}; "
                f"contract: {spec.signature}",
                method,
            )
        result = fn(state, *inputs)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise self._error(
                f"must return a (state, outputs) pair, got {type(result).__name__}", method
            )
        new_state, outputs = result
        self._check_state(method, state, new_state)
        if spec is not None:
            self._check_outputs(method, spec, outputs)
        return new_state, outputs

    def abstract_call(self, method: str, state: PyTree, *inputs: Any) -> tuple[PyTree, Any]:
        """The ``(state, outputs)`` of :meth:`call` as ``jax.ShapeDtypeStruct`` pytrees.

        ``state`` and ``inputs`` may be arrays or ``ShapeDtypeStruct``s; nothing is
        computed (``jax.eval_shape``). Raises what :meth:`call` raises.
        """
        return jax.eval_shape(functools.partial(self.call, method), state, *inputs)

    def __repr__(self) -> str:
        names = ", ".join(_method_name(k) for k in self.methods)
        return f"Component(name={self.name!r}, role={self.role.value}, methods=[{names}])"

    def _method(self, method: str) -> Callable[..., Any]:
        if self.role is Role.BACKEND:
            raise self._error(
                "a Backend holds op implementations, not state methods; "
                "the lowering reads them from component.methods",
                method,
            )
        if method not in self.methods:
            have = ", ".join(self.methods) or "none"
            raise self._error(f"no such method; this component has: {have}", method)
        return self.methods[method]

    def _check_state(self, method: str, old: PyTree, new: PyTree) -> None:
        old_leaves, old_def = jax.tree_util.tree_flatten_with_path(old)
        new_leaves, new_def = jax.tree_util.tree_flatten_with_path(new)
        if old_def != new_def:
            raise self._error(
                f"changed the state's tree structure from {old_def} to {new_def}", method
            )
        for (path, a), (_, b) in zip(old_leaves, new_leaves):
            ta, tb = _aval(a), _aval(b)
            if ta is None or tb is None:
                raise self._error(
                    f"state leaf {jax.tree_util.keystr(path) or '<root>'} is not an array",
                    method,
                )
            if ta.shape != tb.shape or ta.dtype != tb.dtype:
                raise self._error(
                    f"changed state leaf {jax.tree_util.keystr(path) or '<root>'} from "
                    f"{ta.str_short()} to {tb.str_short()}",
                    method,
                )

    def _check_outputs(self, method: str, spec: MethodSpec, outputs: Any) -> None:
        if spec.outputs is None or len(spec.outputs) == 1:
            return
        if not (isinstance(outputs, tuple) and len(outputs) == len(spec.outputs)):
            got = type(outputs).__name__
            if isinstance(outputs, tuple):
                got = f"a {len(outputs)}-tuple"
            raise self._error(
                f"must return {len(spec.outputs)} output(s) ({spec.signature}), got {got}",
                method,
            )

    def _error(self, message: str, method: str | None = None) -> ComponentError:
        return ComponentError(message, component=self.name, role=self.role.value, method=method)


def canonical_json(value: Any) -> str:
    """``value`` as JSON with sorted keys and no whitespace (``ValueError`` for NaN/inf)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def digest(value: Any) -> str:
    """The SHA-256 hex digest of ``value``'s :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def _check_config(config: Any, name: str, role: Role) -> Mapping[str, Any]:
    if not isinstance(config, Mapping):
        raise ComponentError(
            f"config must be a mapping, got {type(config).__name__}",
            component=name,
            role=role.value,
        )
    for key in config:
        if not isinstance(key, str):
            raise ComponentError(
                f"config keys must be str, got {key!r}", component=name, role=role.value
            )
    try:
        copy = json.loads(canonical_json(dict(config)))
    except (TypeError, ValueError) as exc:
        raise ComponentError(
            f"config must hold JSON values (str, int, float, bool, None, lists and str-keyed "
            f"dicts of them; no NaN or infinity): {exc}",
            component=name,
            role=role.value,
        ) from None
    return MappingProxyType(copy)


def _structure(treedef: Any) -> Any:
    """A treedef as nested ``[node type name, children]`` (``"*"`` for a leaf), without
    the nodes' auxiliary data (which may hold objects printed with their address)."""
    data = treedef.node_data()
    if data is None:
        return "*"
    return [data[0].__qualname__, [_structure(child) for child in treedef.children()]]


def _as_role(role: Any, name: str) -> Role:
    try:
        return Role(role)
    except (ValueError, TypeError):
        roles = ", ".join(r.value for r in Role)
        raise ComponentError(
            f"unknown role {role!r}; roles are: {roles}", component=name or None
        ) from None


def _aval(leaf: Any) -> Any:
    try:
        return jax.typeof(leaf)
    except TypeError:
        return None


def _method_name(key: Any) -> str:
    if isinstance(key, tuple):
        domain, op_type = key
        return f"{domain or 'ai.onnx'}::{op_type}"
    return str(key)


def _check_methods(
    methods: Mapping[Any, Callable[..., Any]], role: Role, name: str
) -> dict[str, Callable[..., Any]]:
    spec = contract(role)
    for method, fn in methods.items():
        if not (isinstance(method, str) and method.isidentifier()):
            raise ComponentError(
                "method names must be Python identifiers",
                component=name,
                role=role.value,
                method=str(method),
            )
        if spec.spec(method) is None and not spec.open:
            allowed = ", ".join(s.name for s in spec.required + spec.optional)
            close = difflib.get_close_matches(method, [s.name for s in spec.required], 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ComponentError(
                f"not in the {role.value} contract{hint}; allowed: {allowed}",
                component=name,
                role=role.value,
                method=method,
            )
        if not callable(fn):
            raise ComponentError(
                f"is not callable (got {type(fn).__name__})",
                component=name,
                role=role.value,
                method=method,
            )
    for required in spec.required:
        if required.name not in methods:
            raise ComponentError(
                f"required method is missing; contract: {required.signature}",
                component=name,
                role=role.value,
                method=required.name,
            )
    if spec.open and not methods:
        raise ComponentError(
            f"a {role.value} needs at least one method", component=name, role=role.value
        )
    return dict(methods)


def _check_op_overrides(
    ops: Mapping[Any, Callable[..., Any]], name: str
) -> dict[OpKey, Callable[..., Any]]:
    known = sorted(op_type for domain, op_type in OP_TABLE if domain == "")
    checked: dict[OpKey, Callable[..., Any]] = {}
    for key, impl in ops.items():
        if not (
            isinstance(key, tuple)
            and len(key) == 2
            and all(isinstance(part, str) for part in key)
            and key[1]
        ):
            raise ComponentError(
                "backend keys must be ONNX op keys (domain, op_type)",
                component=name,
                role=Role.BACKEND.value,
                method=repr(key),
            )
        domain = "" if key[0] in DEFAULT_DOMAINS else key[0]
        op_type = key[1]
        label = _method_name((domain, op_type))
        if domain == "" and op_type not in known:
            close = difflib.get_close_matches(op_type, known, 1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ComponentError(
                f"the lowering has no ai.onnx op {op_type!r} to override{hint}",
                component=name,
                role=Role.BACKEND.value,
                method=label,
            )
        if not callable(impl):
            raise ComponentError(
                f"is not callable (got {type(impl).__name__})",
                component=name,
                role=Role.BACKEND.value,
                method=label,
            )
        if (domain, op_type) in checked:
            raise ComponentError(
                "overridden twice (as 'ai.onnx' and '')",
                component=name,
                role=Role.BACKEND.value,
                method=label,
            )
        checked[(domain, op_type)] = impl
    return checked
