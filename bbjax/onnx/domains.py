"""The ONNX domains bbjax adds, and their opset versions."""

RANDOM = "ai.bytesandbrains.random"  # key-based sampling: RandomBits, RandomSplit, RandomFoldIn, RandomSeed
LAX = "ai.bytesandbrains.lax"        # JAX primitives kept exact: BitcastConvert, ErfInv

OPSETS = {RANDOM: 1, LAX: 1}
