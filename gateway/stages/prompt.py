"""Stage 3c, prompt: a request that names a prompt instead of sending one, and the context budget.

A chat-completions request may carry, instead of (or before) its `messages`, two extension
fields: `prompt` (`<namespace>/<name>[@label|@version]`, default label `production`) and
`variables` (an object of strings, numbers or booleans). `model` may be left out: the prompt
names the alias it is written for, and a request naming another alias is refused. The request's
`messages`, if any, are the conversation so far and go between the prompt's system messages and
its templated turn (prompts/template.py).

- parse (resolve): the reference, to one compiled version (a live split may pick the candidate
  version for `production`: prompts/registry.py). 404 `prompt_not_found` for a name, label or
  version that does not exist.
- after the features stage (render): the version rendered with the caller's variables plus the
  route's features (the feature store's values, by feature name; "unknown" when the route skipped
  the lookup). Missing or unexpected variables: 400 `prompt_variables_invalid` naming each; a
  caller's variable cannot override a feature (400 too). The prompt's parameters are defaults;
  the caller's own win. The cache and the backends see the rendered request only.
- budget: on a route whose backends declare a `context_window`, the request's tokens are counted
  (the route's tokenizer, or the estimate: prompts/tokens.py) before any call. Over the window,
  the route's `context.overflow` decides: `truncate_oldest` drops the oldest turns until it fits
  (X-Tandem-Context: truncated; dropped=N), `fallback` (and a truncation that cannot fit) sends it
  to the route's `context_fallback`, and without one the answer is 400 `context_length_exceeded`
  naming both numbers: the backend is never sent a request it would refuse.

Every outcome is counted (`tandem_gateway_prompt_renders_total{prompt, prompt_version, outcome}`,
`tandem_gateway_context_overflow_total{route, action}`), and `prompt` and `prompt_version` label
every request metric.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.stages.call import Call
from gateway.tracing import set_prompt
from prompts.registry import PromptNotFound
from prompts.template import as_text
from prompts.tokens import drop_oldest, fit_oldest, message_tokens

EXTENSION_FIELDS = ("prompt", "variables")
CONTEXT_HEADER = "X-Tandem-Context"
PROMPT_HEADER = "X-Tandem-Prompt"
UNKNOWN = "unknown"  # a feature the route could not read, as the feature block writes it


def check_prompt_body(body: dict[str, Any]) -> None:
    """The shape of a request that names a prompt (chat completions); GatewayError 400."""
    if not isinstance(body["prompt"], str) or not body["prompt"]:
        raise GatewayError(
            400,
            "'prompt' must be a string: <namespace>/<name>[@label|@version].",
            "invalid_request",
            param="prompt",
        )
    variables = body.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise GatewayError(
            400, "'variables' must be an object.", "invalid_request", param="variables"
        )
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model):
        raise GatewayError(
            400, "'model' must be a string when given.", "invalid_request", param="model"
        )
    messages = body.get("messages")
    if messages is not None and (
        not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages)
    ):
        raise GatewayError(
            400,
            "'messages' (the conversation so far) must be an array of message objects.",
            "invalid_request",
            param="messages",
        )


def resolve(call: Call) -> None:
    """The version the request's `prompt` names; its model alias filled in when left out."""
    body = call.body
    try:
        prompt, version, arm = call.compiled.prompts.resolve(body["prompt"], body)
    except PromptNotFound as exc:
        raise GatewayError(404, str(exc), "prompt_not_found", param="prompt") from None
    except ValueError as exc:
        raise GatewayError(400, str(exc), "invalid_request", param="prompt") from None
    model = body.get("model")
    if model is None:
        body["model"] = prompt.model
    elif model != prompt.model:
        raise GatewayError(
            400,
            f"The prompt '{prompt.name}' is written for the model '{prompt.model}', not "
            f"'{model}'; leave 'model' out or send '{prompt.model}'.",
            "prompt_model_mismatch",
            param="model",
        )
    call.prompt, call.prompt_arm = version, arm
    call.prompt_labels = (prompt.name, version.label)


class PromptStage:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def render(self, call: Call) -> None:
        """The rendered request in `call.body` / `call.raw`; GatewayError 400 naming the
        variables when they do not match the version's."""
        version = call.prompt
        assert version is not None and call.route is not None
        if call.span is not None:
            set_prompt(call.span, *call.prompt_labels)
        t0 = time.perf_counter()
        body = call.body
        given = body.get("variables") or {}
        values: dict[str, str] = {}
        bad = []
        for name, value in given.items():
            text = as_text(value)
            if text is None:
                bad.append(name)
            else:
                values[name] = text
        features = call.feature_values
        route = call.compiled.routes.get(body["model"])
        if features is None and route is not None and route.features is not None:
            features = dict.fromkeys(route.features.names, UNKNOWN)
        clash = sorted(set(given) & set(features)) if features else []
        if features:
            values.update(features)
        missing, extra = version.problems(values.keys())
        if features:  # the features the prompt does not use are not the caller's mistake
            extra = [e for e in extra if e not in features]
        if bad or clash or missing or extra:
            self._count(call, "invalid")
            raise GatewayError(
                400, _variables_message(version, missing, extra, clash, bad),
                "prompt_variables_invalid", param="variables",
            )  # fmt: skip
        history = body.get("messages")
        out = {**version.parameters}
        out.update((k, v) for k, v in body.items() if k not in EXTENSION_FIELDS)
        out["messages"] = version.render(values, history)
        call.body = out
        call.raw = orjson.dumps(out)
        m = self.metrics
        m.child(m.prompt_render, *call.prompt_labels).observe(time.perf_counter() - t0)
        self._count(call, "rendered")

    def _count(self, call: Call, outcome: str) -> None:
        m = self.metrics
        m.child(m.prompt_renders, *call.prompt_labels, call.prompt_arm, outcome).inc()

    def budget(self, call: Call) -> None:
        """Fit a chat request into its route's context window (module docstring)."""
        route = call.route
        assert route is not None
        window = route.window
        body = call.body
        if window is None or call.endpoint != "chat.completions":
            return
        messages = body["messages"]
        counts = message_tokens(route.counter, messages)
        room = body.get("max_completion_tokens") or body.get("max_tokens")
        room = room if isinstance(room, int) and not isinstance(room, bool) else 0
        need = sum(counts) + room
        call.need = need
        if need <= window:
            return
        m = self.metrics
        if route.overflow == "truncate_oldest":
            n = fit_oldest(counts, messages, window - room)
            if n > 0:
                kept = drop_oldest(messages, n)
                body = call.body = {**body, "messages": kept}
                call.raw = orjson.dumps(body)
                call.need = sum(message_tokens(route.counter, kept)) + room
                call.context_note = f"truncated; dropped={n}"
                m.child(m.context_overflow, route.alias, "truncated").inc()
                return
        if route.context_fallback is not None:
            call.context_note = f"fallback; to={route.context_fallback.alias}"
            m.child(m.context_overflow, route.alias, "fallback").inc()
            return  # the forward stage sends it to the context fallback (call.need > window)
        m.child(m.context_overflow, route.alias, "refused").inc()
        raise GatewayError(
            400,
            f"This request needs {need} tokens ({need - room} of messages, counted with "
            f"{route.counter.name}, plus max_tokens {room}), more than the {window}-token "
            f"context window of the model '{route.alias}'"
            + (
                ", even with its oldest turns dropped"
                if route.overflow == "truncate_oldest"
                else ""
            )
            + ". Shorten the conversation or lower max_tokens.",
            "context_length_exceeded",
            param="messages",
        )


def prompt_headers(call: Call) -> dict[str, str]:
    """What the caller learns: the prompt version that answered (X-Tandem-Prompt) and what the
    context budget did (X-Tandem-Context)."""
    out = {}
    if call.prompt is not None:
        out[PROMPT_HEADER] = f"{call.prompt.name}@{call.prompt.label}"
    if call.context_note is not None:
        out[CONTEXT_HEADER] = call.context_note
    return out


def _variables_message(
    version: Any, missing: list[str], extra: list[str], clash: list[str], bad: list[str]
) -> str:
    parts = []
    if missing:
        parts.append(f"missing variables {missing}")
    if extra:
        parts.append(f"unexpected variables {extra}")
    if clash:
        parts.append(f"variables {clash} come from the feature store and cannot be sent")
    if bad:
        parts.append(f"variables {bad} must be strings, numbers or booleans")
    expected = sorted(version.variables)
    return (
        f"The prompt '{version.name}@{version.label}': {'; '.join(parts)} (it expects {expected})."
    )
