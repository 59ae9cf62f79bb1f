"""LocalBackend (batched) vs a naive per-query `model.generate` loop on the same 32 Alpaca queries.

Both decode greedily with the same max_new_tokens and stop at <|im_end|>; only real new tokens count
(tokens up to and excluding the stop token), so padding and post-stop steps earn nothing.
Writes bench/results/sampling.json.

    .venv/bin/python bench/bench_sampling.py [--queries 32] [--max-new-tokens 64] [--batch-size 32]
        [--threads N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from delia.core.config import SamplingConfig
from delia.core.models import EMBEDDED, cpu_supports_bf16, load_model, load_tokenizer
from delia.generation.local import LocalBackend, stop_token_ids

ROOT = Path(__file__).resolve().parents[1]
ALPACA = ROOT.parent / "shared" / "data" / "alpaca" / "alpaca_data.json.gz"
RESULT = ROOT / "bench" / "results" / "sampling.json"


def alpaca_prompts(n: int) -> list[list[dict[str, str]]]:
    records = json.loads(gzip.decompress(ALPACA.read_bytes()))[:n]
    prompts = []
    for record in records:
        text = record["instruction"] + (f"\n\n{record['input']}" if record["input"].strip() else "")
        prompts.append([{"role": "user", "content": text}])
    return prompts


def naive_loop(
    model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], max_new: int
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
                max_new_tokens=max_new,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=tokenizer.pad_token_id,
                temperature=None,
                top_p=None,
                top_k=None,
            )
        row = out[0, ids["input_ids"].shape[1] :].tolist()
        new_tokens += next((i for i, t in enumerate(row) if t in stops), len(row))
    return new_tokens, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queries", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--autocast", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    prompts = alpaca_prompts(args.queries)
    tokenizer = load_tokenizer(EMBEDDED)
    model = load_model(EMBEDDED).eval()
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=args.max_new_tokens)

    backend = LocalBackend(
        model, tokenizer, batch_size=args.batch_size, autocast_mode=args.autocast, progress=False
    )
    backend.generate(prompts[:2], sampling.model_copy(update={"max_new_tokens": 4}))  # warm-up, not timed
    backend.stats = type(backend.stats)()
    backend.generate(prompts, sampling)
    backend_tok_s = backend.stats.tokens_per_second

    naive_loop(model, tokenizer, prompts[:1], 4)  # warm-up, not timed
    naive_tokens, naive_seconds = naive_loop(model, tokenizer, prompts, args.max_new_tokens)
    naive_tok_s = naive_tokens / naive_seconds

    result = {
        "backend_tok_s": round(backend_tok_s, 1),
        "naive_tok_s": round(naive_tok_s, 1),
        "ratio": round(backend_tok_s / naive_tok_s, 2),
        "backend": {
            "new_tokens": backend.stats.new_tokens,
            "seconds": round(backend.stats.seconds, 2),
            "batch_size": args.batch_size,
            "autocast": args.autocast,
        },
        "naive": {"new_tokens": naive_tokens, "seconds": round(naive_seconds, 2), "dtype": "float32"},
        "queries": len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "decoding": "greedy, stop at <|im_end|>; only tokens before the stop token count",
        "model": EMBEDDED,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_autocast": cpu_supports_bf16(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_avg_1m_before": round(load_before, 2),
            "load_avg_1m_after": round(os.getloadavg()[0], 2),
        },
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
