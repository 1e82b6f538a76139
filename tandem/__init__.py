"""Tandem: typed config, shared vocabulary and the `tandem` CLI.

Nothing here imports pulumi at module level, so runtime services and the CLI share it.
"""
