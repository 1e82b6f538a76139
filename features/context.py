"""Features as model input: how a request's features reach the model, per endpoint.

- chat completions: one system message, placed after the caller's own system messages (the
  caller's instructions stay first), holding this block, the documented contract
  (docs/feature-store.md); a request that names a prompt gets the values as the prompt's
  variables instead (gateway/stages/prompt.py):

      Known facts about this request's customer_id (feature service support_chat_context,
      from the feature store; "unknown" = no value):
      - plan_tier: enterprise
      - open_tickets: 2

- text completions: the same block and a blank line before the prompt;
- embeddings and other non-LLM models (Tandem's batch app): the values beside the input, as the
  body's `features` object ({"plan_tier": "enterprise", ...}), which serving/batch_app.py hands
  to the model with the texts.

The body is changed in place of a copy, never the caller's object; values are rendered once
here so the prompt and the model see the same strings.
"""

from __future__ import annotations

import math
from typing import Any

from vocabulary.features import FeatureRead

BODY_FIELD = "features"  # the JSON field non-LLM models receive the values in


def render_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return "[" + ", ".join(render_value(v) for v in value) + "]"
    return str(value)


def block(read: FeatureRead, values: dict[str, Any]) -> str:
    lines = [
        f"Known facts about this request's {read.entity.name} (feature service {read.service}, "
        'from the feature store; "unknown" = no value):'
    ]
    lines += [f"- {name}: {render_value(v)}" for name, v in values.items()]
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def enrich(endpoint: str, body: dict[str, Any], read: FeatureRead, values: dict[str, Any]) -> dict:
    """A copy of `body` carrying the features the way `endpoint`'s model takes them."""
    out = dict(body)
    if endpoint == "chat.completions":
        messages = list(body["messages"])
        at = 0
        while at < len(messages) and messages[at].get("role") in ("system", "developer"):
            at += 1
        messages.insert(at, {"role": "system", "content": block(read, values)})
        out["messages"] = messages
    elif endpoint == "completions":
        prefix = block(read, values) + "\n\n"
        prompt = body["prompt"]
        out["prompt"] = (
            prefix + prompt
            if isinstance(prompt, str)
            else [prefix + p if isinstance(p, str) else p for p in prompt]
        )
    else:
        out[BODY_FIELD] = {k: _json_safe(v) for k, v in values.items()}
    return out
