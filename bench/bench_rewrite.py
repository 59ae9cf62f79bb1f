"""Instruction-rewriting speed: LocalBackend's continuous batching (with the rewriter's blank-line stop
string) against its batched `generate` path, on the same rewrite prompts with the embedded model.

The prompts are the diversify stage's own (synth.axes.rewrite_prompt: system turn, two demonstrations, the
quoted instruction), built from the eight `<sep>` phrasings in configs/experiments/sep-json-new-phrasings.txt
over every axis and direction; sampling is the diversify default (temperature 0.9, 160 new tokens), stop at
"\\n\\n" or <|im_end|>. The two paths alternate `--rounds` times; each figure is new tokens over wall seconds.
The draws are unseeded, as diversify's are, so the two paths write different rewrites of similar length.
Writes bench/results/rewrite.json.

    .venv/bin/python bench/bench_rewrite.py [--prompts 32] [--batch-size 16] [--rounds 2] [--threads N]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, ROOT, busy_cores_now, finish, load_average

from delia.core.config import DiversifyConfig
from delia.core.models import EMBEDDED, load_model, load_tokenizer
from delia.generation.base import Message
from delia.generation.local import LocalBackend
from delia.synth.axes import AXES, rewrite_prompt

RESULT = RESULTS / "rewrite.json"
PHRASINGS = ROOT / "configs" / "experiments" / "sep-json-new-phrasings.txt"
STOP = "\n\n"  # synth.diversify's stop string: a rewrite is one paragraph


def rewrite_prompts(n: int) -> list[list[Message]]:
    """n prompts cycling through phrasings x (axis, direction)."""
    phrasings = [line.strip() for line in PHRASINGS.read_text(encoding="utf-8").splitlines() if line.strip()]
    turns = [(axis, direction) for axis, directions in AXES.items() for direction in range(len(directions))]
    return [
        rewrite_prompt(*turns[i % len(turns)], phrasings[i % len(phrasings)], ["<sep>"]) for i in range(n)
    ]


def timed(backend: LocalBackend, prompts: list[list[Message]], sampling: Any) -> dict[str, Any]:
    backend.stats = type(backend.stats)()
    start = time.perf_counter()
    backend.generate(prompts, sampling)
    seconds = time.perf_counter() - start
    new_tokens = backend.stats.new_tokens
    return {
        "new_tokens": new_tokens,
        "seconds": round(seconds, 2),
        "new_tokens_per_s": round(new_tokens / seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16, help="diversify.backend.batch_size's default")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(RESULT))
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before, busy_before = load_average(), busy_cores_now()
    tokenizer, model = load_tokenizer(EMBEDDED), load_model(EMBEDDED).eval()
    prompts = rewrite_prompts(args.prompts)
    sampling = DiversifyConfig().sampling
    runs: dict[str, list[dict[str, Any]]] = {"continuous": [], "generate": []}
    for _ in range(args.rounds):
        for path in runs:
            backend = LocalBackend(model, tokenizer, batch_size=args.batch_size, progress=False)
            backend.stop_strings = [STOP]
            if path == "generate":
                backend.continuous_batching = lambda: False  # type: ignore[method-assign]
            backend.generate(prompts[:2], sampling.model_copy(update={"max_new_tokens": 4}))  # warm-up
            runs[path].append(timed(backend, prompts, sampling))
    speed = {
        path: sum(r["new_tokens"] for r in rs) / sum(r["seconds"] for r in rs) for path, rs in runs.items()
    }
    result = {
        "new_tokens_per_s": {path: round(value, 1) for path, value in speed.items()},
        "ratio_continuous_vs_generate": round(speed["continuous"] / speed["generate"], 2),
        "runs": runs,
        "prompts": len(prompts),
        "batch_size": args.batch_size,
        "sampling": sampling.model_dump(mode="json"),
        "stop_strings": [STOP],
        "model": EMBEDDED,
    }
    finish(Path(args.out), result, load_before, busy_before)


if __name__ == "__main__":
    main()
