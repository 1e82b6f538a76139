"""Floor 1, the vocabulary: what every other floor says the same way.

Labels and type tokens, pinned versions, the GPU instance catalog, loopback helpers, the typed
config models (stack config, use-case file and its sections) and the one validation-error format.
Imports nothing of Tandem and neither pulumi nor the runtimes (ray, vllm, torch, aiohttp, numpy),
so every extra and every floor can use it.
"""
