"""The ONNX domains bbjax adds, and their opset versions."""

RANDOM = "ai.bytesandbrains.random"  # key-based sampling: RandomBits, RandomSplit, RandomFoldIn, RandomSeed

OPSETS = {RANDOM: 1}
