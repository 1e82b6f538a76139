"""The sentence encoder Tandem runs itself: all-MiniLM-L6-v2 as a numpy forward pass.

A domain package of its own because two runtimes share it: the gateway's semantic cache and the
serving batch app (document embeddings). `embedding.minilm` has the code.
"""
