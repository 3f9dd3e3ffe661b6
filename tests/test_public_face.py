"""The package faces: one error hierarchy in bbjax.errors, install/Node/NodeConfig at the top."""

import importlib
import inspect
import pkgutil

import bbjax
import bbjax.errors


def _all_modules():
    for info in pkgutil.walk_packages(bbjax.__path__, "bbjax."):
        if info.name == "bbjax.onnx.conformance" or info.name.startswith("bbjax.cli"):
            continue
        yield importlib.import_module(info.name)


def test_every_public_exception_lives_in_bbjax_errors():
    defined_elsewhere = set()
    for module in _all_modules():
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and issubclass(obj, bbjax.errors.BbjaxError)
                    and not name.startswith("_") and obj.__module__ != "bbjax.errors"):
                defined_elsewhere.add(f"{obj.__module__}.{name}")
    assert not defined_elsewhere


def test_every_error_class_is_documented_in_the_hierarchy():
    classes = [obj for obj in vars(bbjax.errors).values()
               if inspect.isclass(obj) and issubclass(obj, bbjax.errors.BbjaxError)]
    assert len(classes) >= 30
    for cls in classes:
        assert cls.__doc__, cls.__name__
        assert cls.__name__ in bbjax.errors.__doc__, f"{cls.__name__} missing from the tree"


def test_named_errors_share_their_stage_base():
    e = bbjax.errors
    assert issubclass(e.PassportError, e.ArtifactError)
    assert issubclass(e.NotCompiledError, e.ArtifactError)
    assert issubclass(e.InstallError, e.NodeError)
    assert issubclass(e.EnvelopeError, e.WireError)
    assert issubclass(e.ConfigError, e.InvalidArgument)
    for cls in (e.ComponentError, e.AggregatorError, e.PrivacyError, e.CompressionError,
                e.SelectionError, e.DataError):
        assert issubclass(cls, e.InvalidArgument)


def test_install_and_node_are_on_the_top_level_face():
    from bbjax.runtime.install import install
    from bbjax.runtime.node import Node, NodeConfig

    assert bbjax.install is install
    assert bbjax.Node is Node
    assert bbjax.NodeConfig is NodeConfig
    assert "fnv1a64" not in bbjax.runtime.__all__ and "MAGIC" not in bbjax.runtime.__all__
