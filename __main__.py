"""Composition root for `pulumi up`: everything lives in tandem.program."""

from tandem.program import main

main()
