"""Self-sampling speed: LocalBackend's continuous batching vs its batched `generate` path vs a naive
per-query `model.generate` loop, on the same Alpaca queries, 128-token answers.

All three sample with the same settings (temperature 0.7, top-p 0.95, per-query seeds for the two batched
paths) and stop at <|im_end|>; only real new tokens count (up to and excluding the stop token), so padding
and post-stop steps earn nothing. The issue's goals (>= 1,000 new tokens/s, >= 10x naive) are checked and
recorded as they come out. Writes bench/results/sampling.json.

    .venv/bin/python bench/bench_sampling.py [--queries 64] [--naive-queries 16] [--max-new-tokens 128]
        [--batch-size 64] [--threads N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path
from typing import Any

import torch
from _common import ALPACA, RESULTS, busy_cores_now, finish, load_average, matmul_peak

from delia.core.config import SamplingConfig
from delia.core.models import EMBEDDED, cpu_supports_bf16, load_model, load_tokenizer
from delia.generation.local import LocalBackend, stop_token_ids

RESULT = RESULTS / "sampling.json"


def alpaca_prompts(n: int) -> list[list[dict[str, str]]]:
    records = json.loads(gzip.decompress(ALPACA.read_bytes()))[:n]
    prompts = []
    for record in records:
        text = record["instruction"] + (f"\n\n{record['input']}" if record["input"].strip() else "")
        prompts.append([{"role": "user", "content": text}])
    return prompts


def naive_loop(
    model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], sampling: SamplingConfig
) -> tuple[int, float]:
    """One `generate` call per query, fp32, no batching: what a first script would do."""
    stops = stop_token_ids(tokenizer)
    new_tokens = 0
    start = time.perf_counter()
    for prompt in prompts:
        ids = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            out = model.generate(
                **ids,
                max_new_tokens=sampling.max_new_tokens,
                do_sample=sampling.temperature > 0,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
            )
        row = out[0, ids["input_ids"].shape[1] :].tolist()
        new_tokens += next((i for i, t in enumerate(row) if t in stops), len(row))
    return new_tokens, time.perf_counter() - start


def backend_speed(
    model: Any,
    tokenizer: Any,
    prompts: list[list[dict[str, str]]],
    sampling: SamplingConfig,
    batch_size: int,
    continuous: bool,
) -> dict[str, Any]:
    backend = LocalBackend(model, tokenizer, batch_size=batch_size, progress=False)
    if not continuous:
        backend.continuous_batching = lambda: False  # type: ignore[method-assign]
    backend.generate(prompts[:2], sampling.model_copy(update={"max_new_tokens": 4}))  # warm-up, not timed
    backend.stats = type(backend.stats)()
    backend.generate(prompts, sampling, seeds=list(range(len(prompts))))
    stats = backend.stats
    return {
        "new_tokens_per_s": round(stats.tokens_per_second, 1),
        "new_tokens": stats.new_tokens,
        "seconds": round(stats.seconds, 2),
        "batch_size": batch_size,
    }


def flop_ceiling(model: Any, new_tokens_per_s: float) -> dict[str, Any]:
    """The most new tokens/s this CPU's matmuls allow: each token costs 2 FLOP per weight (attention over
    the cache adds a little more), so no decoder beats the GEMM peak divided by that. It says whether the
    issue's 1,000 tokens/s is reachable here at all (on an AVX2 CPU, fp32, it is not)."""
    dtype = torch.bfloat16 if cpu_supports_bf16() else torch.float32
    peak = matmul_peak(dtype)
    gflop_per_token = 2 * sum(p.numel() for p in model.parameters()) / 1e9
    at_peak = peak / gflop_per_token
    return {
        "matmul_dtype": str(dtype).removeprefix("torch."),
        "matmul_peak_gflop_per_s": round(peak, 1),
        "gflop_per_new_token": round(gflop_per_token, 3),
        "new_tokens_per_s_at_peak": round(at_peak, 1),
        "fraction_of_ceiling": round(new_tokens_per_s / at_peak, 4),
        "goal_1000_within_ceiling": at_peak >= 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--naive-queries", type=int, default=16, help="the naive loop is slow: fewer queries")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before, busy_before = load_average(), busy_cores_now()
    prompts = alpaca_prompts(args.queries)
    tokenizer = load_tokenizer(EMBEDDED)
    model = load_model(EMBEDDED).eval()
    sampling = SamplingConfig(temperature=0.7, top_p=0.95, max_new_tokens=args.max_new_tokens)

    continuous = backend_speed(model, tokenizer, prompts, sampling, args.batch_size, continuous=True)
    batched = backend_speed(model, tokenizer, prompts, sampling, args.batch_size, continuous=False)
    naive_loop(model, tokenizer, prompts[:1], sampling.model_copy(update={"max_new_tokens": 4}))  # warm-up
    naive_tokens, naive_seconds = naive_loop(model, tokenizer, prompts[: args.naive_queries], sampling)
    naive_tok_s = naive_tokens / naive_seconds
    best = continuous["new_tokens_per_s"]
    ceiling = flop_ceiling(model, best)
    result = {
        "new_tokens_per_s": best,
        "ratio": round(best / naive_tok_s, 2),
        "ratio_vs_batched_generate": round(best / batched["new_tokens_per_s"], 2),
        "goals": {
            "new_tokens_per_s >= 1000": best >= 1000,
            "ratio >= 10": best / naive_tok_s >= 10,
        },
        "ceiling": ceiling,
        "continuous": continuous,
        "batched_generate": batched,
        "naive": {
            "new_tokens_per_s": round(naive_tok_s, 1),
            "new_tokens": naive_tokens,
            "seconds": round(naive_seconds, 2),
            "queries": args.naive_queries,
        },
        "queries": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "decoding": "temperature 0.7, top-p 0.95, top-k 50; stop at <|im_end|>; tokens before the stop count",
        "weights": "bf16 copy" if cpu_supports_bf16() else "float32 (no native bf16 matmul on this CPU)",
        "model": EMBEDDED,
    }
    finish(Path(args.out), result, load_before, busy_before)


if __name__ == "__main__":
    main()
