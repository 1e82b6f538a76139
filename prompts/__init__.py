"""Prompts under management: templates compiled once and rendered per request, the registry the
gateway resolves `support/answer@production` against (labels, versions, a live canary split),
and the context budget (token counting with the model's tokenizer, truncation of old turns).

A domain foundation (floor 2, beside features/): runtime code, no pulumi, no aiohttp; the gateway
(gateway/stages/prompt.py) and `tandem prompts` build on it. The file format is
vocabulary/prompts.py.
"""
