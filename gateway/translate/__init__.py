"""The APIs coding assistants speak, translated to and from OpenAI chat completions.

Claude Code speaks Anthropic's Messages API, Codex OpenAI's Responses API; the platform's own
models (vLLM, Ray Serve LLM) speak chat completions. One module per API:

    messages.py   Anthropic Messages <-> chat completions (requests, answers, streams, errors),
                  and the usage of a Messages answer or stream passed through unchanged
    responses.py  OpenAI Responses <-> chat completions (requests, answers, streams)

Pure: no I/O. The exchange stage (gateway/stages/exchange.py) decides per backend whether a
request is passed through or translated, and the relay stage feeds the streams through here.
Usage comes out of every answer in one normalized form (`Usage`), which the account stage charges.
"""
