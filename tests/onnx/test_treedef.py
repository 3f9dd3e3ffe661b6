import collections

import jax
import optax
import pytest
from flax import nnx

from bbjax.onnx.treedef import treedef_from_json, treedef_to_json

from bbjax.errors import TreeCodecError


@pytest.mark.parametrize("tree", [
    (1, [2, None], {"b": 3, "a": (4,)}),
    collections.OrderedDict(z=1, a=2),
    optax.adamw(1e-3).init({"w": jax.numpy.zeros(2)}),
    nnx.split(nnx.Linear(2, 3, rngs=nnx.Rngs(0)), nnx.Param)[1],
])
def test_structures_round_trip(tree):
    treedef = jax.tree.structure(tree)
    assert treedef_from_json(treedef_to_json(treedef)) == treedef


def test_unimportable_type_is_reported():
    with pytest.raises(TreeCodecError, match="cannot be imported"):
        treedef_from_json('{"type":"nowhere.module:Thing","aux":null,"children":[]}')


def test_invalid_json_is_reported():
    with pytest.raises(TreeCodecError, match="JSON"):
        treedef_from_json("{nope")
