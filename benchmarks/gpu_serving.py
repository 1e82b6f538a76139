"""Serve + vLLM (Tandem's generated config, through ray.serve.llm) against bare vLLM, same GPU.

A randomly initialised Llama-3.2-1B-shaped model, fixed prompt and output lengths (token-id
prompts, `ignore_eos`), the same closed-loop load generator against both OpenAI endpoints. Prints a
table and writes JSON; the ratio is the cost of Serve's proxy, router and autoscaling layer.
Run through benchmarks/gpu_serving.sh on a machine with an NVIDIA GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving import builder, local  # noqa: E402
from serving.tiny_llm import LLAMA_1B, build_random_llama  # noqa: E402
from vocabulary.deployment import ModelDeployment  # noqa: E402

MODEL_ID = "bench-llama-1b"


def gpu_name() -> str:
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip().splitlines()[0]


async def load(url: str, prompts: list[list[int]], output_len: int, concurrency: int) -> dict:
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    tokens = 0

    async def one(client: httpx.AsyncClient, prompt: list[int]) -> None:
        nonlocal tokens
        async with sem:
            start = time.perf_counter()
            resp = await client.post(
                url,
                json={
                    "model": MODEL_ID,
                    "prompt": prompt,
                    "max_tokens": output_len,
                    "min_tokens": output_len,
                    "ignore_eos": True,
                    "temperature": 0.0,
                },
            )
            resp.raise_for_status()
            latencies.append(time.perf_counter() - start)
            tokens += resp.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(
        timeout=600, limits=httpx.Limits(max_connections=concurrency * 2)
    ) as client:
        await asyncio.gather(*(one(client, p) for p in prompts[:concurrency]))  # warm-up
        latencies.clear()
        tokens = 0
        start = time.perf_counter()
        await asyncio.gather(*(one(client, p) for p in prompts))
        wall = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(prompts),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(prompts) / wall, 3),
        "output_tokens_per_s": round(tokens / wall, 1),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3),
    }


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise TimeoutError(url)


def run_bare(model_dir: Path, a: argparse.Namespace, prompts: list[list[int]]) -> dict:
    port = local.free_port()
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        MODEL_ID,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--max-model-len",
        str(a.max_model_len),
        "--max-num-seqs",
        str(a.max_num_seqs),
        "--gpu-memory-utilization",
        str(a.gpu_memory_utilization),
    ]
    with open(a.out.with_suffix(".bare.log"), "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1/models", proc)
        url = f"http://127.0.0.1:{port}/v1/completions"
        return asyncio.run(load(url, prompts, a.output_len, a.concurrency))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def run_serve(model_dir: Path, a: argparse.Namespace, prompts: list[list[int]]) -> dict:
    spec = ModelDeployment.model_validate(
        {
            "name": "bench",
            "model": MODEL_ID,
            "source": str(model_dir),
            "kind": "llm",
            "gpu": "H100",  # any GPU class: the accelerator pin is dropped below
            "engine": {
                "max_model_len": a.max_model_len,
                "max_num_seqs": a.max_num_seqs,
                "gpu_memory_utilization": a.gpu_memory_utilization,
                "dtype": "bfloat16",
            },
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
        }
    )
    config = builder.serve_config([spec], port=local.free_port())
    for app in config["applications"]:
        for cfg in app["args"]["llm_configs"]:
            cfg.pop("accelerator_type", None)  # run on whatever GPU this machine has
    state = a.out.parent / "serve-state"
    server = local.start(config, state, num_cpus=os.cpu_count() or 8, timeout_s=900)
    try:
        url = f"{server.endpoint}{builder.route_prefix(spec)}/v1/completions"
        return asyncio.run(load(url, prompts, a.output_len, a.concurrency))
    finally:
        local.stop(state)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, default=Path("out/gpu_serving.json"))
    p.add_argument("--model-dir", type=Path, default=Path("/tmp/tandem-bench-llama-1b"))
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--output-len", type=int, default=128)
    p.add_argument("--requests", type=int, default=256)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--max-num-seqs", type=int, default=64)
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    a = p.parse_args()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    if not (a.model_dir / "config.json").exists():
        build_random_llama(a.model_dir, LLAMA_1B, vocab_size=32000, dtype="bfloat16")
    vocab = json.loads((a.model_dir / "config.json").read_text())["vocab_size"]
    rng = random.Random(0)
    prompts = [[rng.randrange(3, vocab) for _ in range(a.prompt_len)] for _ in range(a.requests)]
    result = {
        "gpu": gpu_name(),
        "model": "random-init Llama-3.2-1B shape",
        "vocab_size": vocab,
        "prompt_len": a.prompt_len,
        "output_len": a.output_len,
        "requests": a.requests,
        "concurrency": a.concurrency,
        "max_num_seqs": a.max_num_seqs,
        "bare_vllm": run_bare(a.model_dir, a, prompts),
        "serve_vllm": run_serve(a.model_dir, a, prompts),
    }
    result["serve_over_bare_tokens_per_s"] = round(
        result["serve_vllm"]["output_tokens_per_s"] / result["bare_vllm"]["output_tokens_per_s"], 3
    )
    a.out.write_text(json.dumps(result, indent=2))
    print(f"{'':12} {'req/s':>8} {'out tok/s':>10} {'p50 s':>7} {'p99 s':>7}")
    for key in ("bare_vllm", "serve_vllm"):
        r = result[key]
        print(
            f"{key:12} {r['requests_per_s']:8.2f} {r['output_tokens_per_s']:10.1f} "
            f"{r['latency_p50_s']:7.3f} {r['latency_p99_s']:7.3f}"
        )
    print(f"Serve/bare output tokens/s: {result['serve_over_bare_tokens_per_s']}  -> {a.out}")


if __name__ == "__main__":
    main()
