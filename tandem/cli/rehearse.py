"""`tandem rehearse --stack NAME [--dry-run]`: the first real `pulumi up` on a sandbox account,
as a checklist that runs itself.

Each step says what it runs, what to expect and how long it usually takes (docs/rehearsal.md has
the same list with the failure modes). `--dry-run` prints the steps for the stack (cluster name,
region, the secrets it needs, the gateway aliases the smoke test calls) without touching a cloud:
that part, and the smoke test itself (`smoke()`, plain HTTP against the gateway's
OpenAI-compatible API), are what the test suite exercises; the cloud steps need the Pulumi CLI,
AWS credentials, Docker with buildx and kubectl, which the build machines do not have.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

GATEWAY_PORT = 18080  # local end of the kubectl port-forward to the gateway Service


@dataclass(frozen=True)
class Step:
    title: str
    command: str
    expect: str
    typical: str
    cloud: bool = True  # needs the Pulumi CLI / AWS / a cluster


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rehearse",
        help="the first `pulumi up` on a sandbox account, step by step (--dry-run prints it)",
    )
    p.add_argument("--stack", required=True, help="stack name (stacks/Pulumi.<stack>.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the steps, run nothing")
    p.add_argument(
        "--smoke-only",
        metavar="URL",
        help="only the smoke test, against a gateway base URL (key from $TANDEM_API_KEY)",
    )
    p.set_defaults(func=run)


def steps(stack: str) -> list[Step]:
    """The rehearsal for one stack, with the names and counts its config implies."""
    from tandem.stack import load

    spec = load(stack)
    cfg = spec.config
    cluster, region = cfg.cluster_name, cfg.region
    secrets = [f"tandem:{k.secret_config_key}" for k in cfg.gateway.keys]
    secrets += [f"tandem:{r.secret_config_key}" for r in cfg.alerting.receivers if r.needs_secret]
    aliases = [uc.gateway.alias for uc in spec.use_cases if uc.gateway and uc.gateway.alias]
    key = cfg.gateway.keys[0].secret_config_key if cfg.gateway.keys else None
    set_secrets = "; ".join(f"pulumi config get {s} >/dev/null" for s in secrets) or "true"
    return [
        Step(
            "Offline plan",
            f"tandem plan --stack {stack}",
            "exit 0: the resource tree, the cost envelope (GPU pools and every other component) "
            "within the budget, no mandatory policy violation, every plan-time check ok",
            "10 s",
            cloud=False,
        ),
        Step(
            "Tools and account",
            "pulumi version && aws sts get-caller-identity && docker buildx version "
            "&& kubectl version --client",
            "each prints a version / the sandbox account id; Docker must run (the images are "
            "built at `pulumi up`)",
            "5 s",
        ),
        Step(
            "Stack and secrets",
            f"pulumi stack select {stack} --create && {set_secrets}",
            "every secret exists; set a missing one with `pulumi config set --secret <key> "
            f"<value>` ({', '.join(secrets) or 'none needed'})",
            "1 min",
        ),
        Step(
            "Preview with the policy pack",
            f"pulumi preview --stack {stack} --policy-pack policies",
            "the same resources `tandem plan` listed, all `create`; `Policies: no violations` "
            "(or advisory ones only, outside prod); image builds are skipped in preview "
            "(buildOnPreview: false) and their refs show as unknown",
            "1-3 min",
        ),
        Step(
            "Apply",
            f"pulumi up --stack {stack} --policy-pack policies --yes",
            "VPC and NAT (2 min), EKS control plane (10-12 min), system nodes (3-5 min), the "
            "images built and pushed to ECR (gateway 2-4 min; serving 10-20 min: its vLLM base "
            "is ~10 GB), then the Helm releases and Kubernetes objects; ends with `Resources: N "
            "created`",
            "30-45 min",
        ),
        Step(
            "Kubeconfig",
            f"aws eks update-kubeconfig --name {cluster} --region {region}",
            f"context arn:aws:eks:{region}:<account>:cluster/{cluster} is current",
            "5 s",
        ),
        Step(
            "Inference clusters ready",
            "kubectl -n tandem-serving wait rayservice --all --for=jsonpath='{.status."
            'conditions[?(@.type=="Ready")].status}\'=True --timeout=30m',
            "each RayService Ready: Karpenter or the node group adds a GPU node (2-4 min), the "
            "serving image is pulled (3-6 min), weights download from S3 and vLLM loads them "
            "(2-5 min for an 8B model)",
            "10-20 min",
        ),
        Step(
            "Gateway smoke test",
            f"kubectl -n tandem-gateway port-forward svc/gateway {GATEWAY_PORT}:80 & "
            + (
                f"TANDEM_API_KEY=$(pulumi config get tandem:{key}) "
                if key
                else "TANDEM_API_KEY=<a gateway key> "
            )
            + f"tandem rehearse --stack {stack} --smoke-only http://127.0.0.1:{GATEWAY_PORT}",
            f"/healthz 200, /v1/models lists {', '.join(aliases) or 'the aliases'}, one "
            "completion or embedding per alias answers 200 with an OpenAI-shaped body",
            "1 min",
        ),
        Step(
            "Tear down (sandbox)",
            f"pulumi destroy --stack {stack} --yes",
            "everything deleted; ECR repositories must be empty first (delete their images)",
            "15-20 min",
        ),
    ]


def _request(
    url: str, key: str | None, body: dict | None = None, timeout: float = 120
) -> tuple[int, Any]:
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, raw.decode(errors="replace")


def smoke(base_url: str, api_key: str | None, aliases: dict[str, list[str]]) -> list[str]:
    """Call the gateway as a backend developer would; returns the problems (empty: passed).
    `aliases`: model alias -> its endpoints (`chat.completions`, `completions`, `embeddings`)."""
    base = base_url.rstrip("/")
    problems: list[str] = []
    status, _ = _request(f"{base}/healthz", None)
    if status != 200:
        problems.append(f"/healthz answered {status}")
    status, models = _request(f"{base}/v1/models", api_key)
    listed = {m.get("id") for m in (models or {}).get("data", [])} if status == 200 else set()
    if status != 200:
        problems.append(f"/v1/models answered {status}: {models}")
    for alias, endpoints in aliases.items():
        if status == 200 and alias not in listed:
            problems.append(f"/v1/models does not list {alias!r} ({sorted(map(str, listed))})")
        if "chat.completions" in endpoints:
            path, body, field = (
                "/v1/chat/completions",
                {
                    "model": alias,
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": "Say hello."}],
                },
                "choices",
            )
        elif "embeddings" in endpoints:
            path, body, field = "/v1/embeddings", {"model": alias, "input": ["hello"]}, "data"
        else:
            path, body, field = (
                "/v1/completions",
                {"model": alias, "prompt": "Hello", "max_tokens": 8},
                "choices",
            )
        got, answer = _request(f"{base}{path}", api_key, body)
        if got != 200 or not isinstance(answer, dict) or not answer.get(field):
            problems.append(f"{path} for {alias!r} answered {got}: {str(answer)[:200]}")
    return problems


def _aliases(stack: str) -> dict[str, list[str]]:
    from tandem.stack import load

    return {
        uc.gateway.alias: list(uc.gateway.endpoints)
        for uc in load(stack).use_cases
        if uc.gateway and uc.gateway.alias
    }


def run(args: argparse.Namespace) -> int:
    if args.smoke_only:
        problems = smoke(args.smoke_only, os.environ.get("TANDEM_API_KEY"), _aliases(args.stack))
        for p in problems:
            print(f"FAIL {p}")
        print("smoke test passed" if not problems else f"smoke test: {len(problems)} problem(s)")
        return 1 if problems else 0
    plan = steps(args.stack)
    for i, step in enumerate(plan, 1):
        print(f"{i}. {step.title} (typically {step.typical})")
        print(f"   $ {step.command}")
        print(f"   expect: {step.expect}")
        if args.dry_run:
            continue
        started = time.monotonic()
        done = subprocess.run(["bash", "-c", step.command])
        took = time.monotonic() - started
        if done.returncode != 0:
            print(f"   FAILED after {took:.0f} s (exit {done.returncode}); see docs/rehearsal.md")
            return 1
        print(f"   ok in {took:.0f} s")
    if args.dry_run:
        print("dry run: nothing was executed")
    return 0
