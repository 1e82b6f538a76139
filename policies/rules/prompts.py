"""Prompt rules: what a prompt shipped to the gateway (the routes ConfigMap's `prompts:`) must not
do. Its schema (owner, model alias, versions, labels) is checked when the stack loads; these
rules judge its content.

- a template is sent with every request to the model and, with capture on, to the tracing
  backend: a credential in it (or asked for as a variable, `{{api_key}}`) leaks on every call;
- a version whose fixed text plus the room it asks for (`max_tokens`) does not fit its model's
  context window fails (or is truncated) on every request, whatever the caller sends.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from policies.framework import ResourceView, as_list, get, k8s_labels, resource_rule
from policies.rules import common as c
from policies.rules.gateway import SECRET_NAME, SECRET_VALUE, _gateway_configs
from policies.settings import PolicySettings
from prompts.tokens import ESTIMATE, MESSAGE_OVERHEAD
from vocabulary import labels
from vocabulary.prompts import VARIABLE


def _prompts(res: ResourceView) -> Iterator[tuple[str, str, Mapping[str, Any], Mapping[str, Any]]]:
    """(config key, prompt name, prompt, the gateway config) for every prompt a gateway
    ConfigMap ships."""
    if get(k8s_labels(res), labels.LABEL_COMPONENT) not in (None, "gateway"):
        return
    for key, doc in _gateway_configs(res):
        prompts = doc.get("prompts")
        if not isinstance(prompts, Mapping):
            continue
        for name, prompt in prompts.items():
            if isinstance(prompt, Mapping):
                yield key, str(name), prompt, doc


def _messages(version: Any) -> list[Mapping[str, Any]]:
    return [m for m in as_list(get(version, "messages")) if isinstance(m, Mapping)]


@resource_rule(
    "prompt-no-secrets",
    "Prompt templates hold no API keys, tokens or credentials, and ask for none as a variable.",
    "critical",
    "Remove the credential from the prompt file (stacks/prompts/): a template goes to the model "
    "with every request and, with capture on, to the tracing backend; tools the model calls "
    "get their credentials from the gateway or the tool, never from the prompt (so no variable "
    "such as {{api_key}} either: the caller would send its credential to the model).",
    (c.CONFIG_MAP,),
    tags=("security", "prompts"),
)
def prompt_no_secrets(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    for _key, name, prompt, _doc in _prompts(res):
        for version in as_list(prompt.get("versions")):
            for i, m in enumerate(_messages(version)):
                content = str(m.get("content", ""))
                where = f"prompt {name}@{get(version, 'version')} messages[{i}]"
                if SECRET_VALUE.search(content):
                    yield f"{where} contains what looks like a credential"
                for var in dict.fromkeys(VARIABLE.findall(content)):
                    if SECRET_NAME.search(var):
                        yield f"{where} asks the caller for a credential as variable {var!r}"


@resource_rule(
    "prompt-fits-context",
    "Every prompt version's fixed text plus its max_tokens fits the context window of the model "
    "it is written for.",
    "high",
    "Shorten the version's messages or lower its max_tokens (the fixed text is counted at 4 "
    "characters a token, before any variable), or write it for a model with a longer context "
    "window.",
    (c.CONFIG_MAP,),
    tags=("prompts", "reliability"),
)
def prompt_fits_context(res: ResourceView, _: PolicySettings) -> Iterator[str]:
    for _key, name, prompt, doc in _prompts(res):
        route = get(doc, "routes", str(prompt.get("model")))
        backends = get(doc, "backends", default={}) or {}
        windows = [
            get(backends, str(get(wb, "backend")), "context_window")
            for wb in as_list(get(route, "backends"))
        ]
        windows = [w for w in windows if isinstance(w, (int, float))]
        if not windows:
            continue
        window = int(min(windows))
        for version in as_list(prompt.get("versions")):
            messages = _messages(version)
            fixed = sum(
                MESSAGE_OVERHEAD + ESTIMATE.count(VARIABLE.sub("", str(m.get("content", ""))))
                for m in messages
            )
            params = get(version, "parameters", default={}) or {}
            room = params.get("max_tokens") or params.get("max_completion_tokens") or 0
            room = room if isinstance(room, int) else 0
            if fixed + room > window:
                yield (
                    f"prompt {name}@{get(version, 'version')} needs {fixed} tokens of fixed text "
                    f"plus max_tokens {room}, over the {window}-token context window of "
                    f"{prompt.get('model')!r}"
                )


RULES = [prompt_no_secrets, prompt_fits_context]
