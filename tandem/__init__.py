"""Floor 4, the entry points: the `tandem` CLI (`tandem/cli/`), the Pulumi program
(`program.py`, run by the repository's `__main__.py`), the offline engine (`engine.py`,
`manifests.py`), `tandem plan` (`plan.py`) and stack loading (`stack.py`).

Everything below may be imported from here; nothing below imports this package (.importlinter's
floors contract). The CLI registers its commands cheaply and imports each command's domain only
when it runs, so every extra keeps a working `tandem` command.
"""
