"""The model's "state space" at the first divergent token of a formatted answer (paper Figure 4).

For each eval prompt, the chat template is rendered with the generation prompt, so the next token is the first
token of the assistant turn: the place where a formatted answer's `{` should come. From the next-token
distribution p (softmax of the logits, float32) we take
  entropy        H(p) = -sum p log p, in nats
  tokens@mass    the smallest number of tokens whose probabilities sum to at least `mass` (default 0.9)
  p_brace        total probability of tokens whose text, leading whitespace stripped, starts with "{"
  p_reference    probability of the reference answer's first token (when the example has a reference)
and average each over prompts. A model that has learnt the format has a narrow state space there (low entropy,
few tokens, high p_brace).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from delia.core.example import Example
from delia.core.io import write_json
from delia.probe.loading import ProbeTarget, load_target
from delia.probe.plots import plot_divergent
from delia.probe.tables import write_csv, write_table

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MASS = 0.9
TOP_TOKENS = 10


def entropy_nats(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy of distributions along the last dim (0 log 0 = 0)."""
    return torch.special.entr(probs.double()).sum(-1)


def tokens_covering(probs: torch.Tensor, mass: float = DEFAULT_MASS) -> torch.Tensor:
    """Smallest k such that the k most probable tokens hold at least `mass` of the probability."""
    ordered = probs.double().sort(dim=-1, descending=True).values
    cumulative = ordered.cumsum(-1)
    # The tolerance keeps a float sum like 0.5 + 0.4 from falling a hair short of 0.9.
    reached = cumulative >= mass - 1e-9
    return reached.int().argmax(-1) + 1


def brace_token_mask(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> torch.Tensor:
    """True for ids whose decoded text starts with "{" once leading whitespace is stripped."""
    ids = range(min(len(tokenizer), vocab_size))
    texts = tokenizer.batch_decode([[i] for i in ids])
    mask = torch.zeros(vocab_size, dtype=torch.bool)
    mask[: len(texts)] = torch.tensor([text.lstrip().startswith("{") for text in texts])
    return mask


def render_prompt(tokenizer: PreTrainedTokenizerBase, example: Example) -> str:
    return tokenizer.apply_chat_template(example.prompt_messages, tokenize=False, add_generation_prompt=True)


def reference_first_token(
    tokenizer: PreTrainedTokenizerBase, example: Example, prompt_ids: list[int]
) -> int | None:
    """The reference answer's first token as the full chat tokenises it; None without a reference."""
    if not example.response:
        return None
    full = tokenizer.apply_chat_template(example.messages, tokenize=False)
    full_ids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if full_ids[: len(prompt_ids)] != prompt_ids or len(full_ids) <= len(prompt_ids):
        return None
    return full_ids[len(prompt_ids)]


def next_token_probs(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], batch_size: int
) -> Iterator[torch.Tensor]:
    """Yield [V] next-token distributions after each text, in order (batched, left-padded)."""
    device = model.get_input_embeddings().weight.device
    tokenizer.padding_side = "left"
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        ).to(device)
        # Left padding: positions must count real tokens only, as they did in training.
        position_ids = (encoded["attention_mask"].cumsum(-1) - 1).clamp_min(0)
        with torch.inference_mode():
            logits = model(**encoded, position_ids=position_ids, logits_to_keep=1).logits[:, -1]
        yield from torch.softmax(logits.float(), dim=-1).cpu()


def divergent_stats(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    run: str,
    mass: float = DEFAULT_MASS,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    """Per-prompt and mean state-space figures at the first assistant token (see the module docstring)."""
    texts = [render_prompt(tokenizer, ex) for ex in examples]
    prompt_ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    references = [
        reference_first_token(tokenizer, ex, ids) for ex, ids in zip(examples, prompt_ids, strict=True)
    ]
    mask: torch.Tensor | None = None
    mean_probs: torch.Tensor | None = None
    rows = []
    probs_iter = next_token_probs(model, tokenizer, texts, batch_size)
    for example, reference, probs in tqdm(
        zip(examples, references, probs_iter, strict=False),
        total=len(texts),
        desc=f"divergent {run}",
        unit="prompt",
        disable=not progress,
    ):
        if mask is None:
            mask = brace_token_mask(tokenizer, probs.shape[-1])
            mean_probs = torch.zeros_like(probs, dtype=torch.float64)
        mean_probs += probs.double() / len(texts)
        top = int(probs.argmax())
        rows.append(
            {
                "id": example.id,
                "entropy": float(entropy_nats(probs)),
                "tokens_at_mass": int(tokens_covering(probs, mass)),
                "p_brace": float(probs[mask].sum()),
                "p_reference": None if reference is None else float(probs[reference]),
                "top_token": tokenizer.decode([top]),
                "top_prob": float(probs[top]),
            }
        )
    return {
        "run": run,
        "mass": mass,
        "n_prompts": len(rows),
        "summary": summarise(rows),
        "mean_distribution_top": top_tokens(tokenizer, mean_probs) if mean_probs is not None else [],
        "per_prompt": rows,
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, float] | None]:
    """Mean and population standard deviation of each numeric per-prompt figure."""
    summary: dict[str, dict[str, float] | None] = {}
    for key in ("entropy", "tokens_at_mass", "p_brace", "p_reference", "top_prob"):
        values = [row[key] for row in rows if row[key] is not None]
        summary[key] = (
            {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "n": len(values)}
            if values
            else None
        )
    return summary


def top_tokens(
    tokenizer: PreTrainedTokenizerBase, probs: torch.Tensor, k: int = TOP_TOKENS
) -> list[dict[str, Any]]:
    values, ids = probs.topk(min(k, probs.shape[-1]))
    return [
        {"token": tokenizer.decode([int(i)]), "id": int(i), "p": float(v)}
        for v, i in zip(values, ids, strict=True)
    ]


def summary_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One CSV/table row per run."""
    rows = []
    for result in results:
        row: dict[str, Any] = {"run": result["run"], "n_prompts": result["n_prompts"], "mass": result["mass"]}
        for key, stats in result["summary"].items():
            row[f"{key}_mean"] = None if stats is None else stats["mean"]
            row[f"{key}_std"] = None if stats is None else stats["std"]
        rows.append(row)
    return rows


def run_divergent_probe(
    targets: list[ProbeTarget],
    examples: list[Example],
    out_dir: Path,
    mass: float = DEFAULT_MASS,
    batch_size: int = 8,
    device: str = "cpu",
) -> dict[str, Any]:
    """Measure every target on the same prompts; write divergent.json, .csv, _per_prompt.csv, .md and .png."""
    results = []
    for target in targets:
        model, tokenizer = load_target(target, device)
        results.append(divergent_stats(model, tokenizer, examples, target.name, mass, batch_size))
        del model
    table = summary_rows(results)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "divergent.json", {"table": table, "results": results})
    write_table(out_dir, "divergent", table)
    write_csv(
        out_dir / "divergent_per_prompt.csv",
        [{"run": r["run"], **row} for r in results for row in r["per_prompt"]],
    )
    plot_divergent(results, out_dir / "divergent.png")
    return {"results": results, "table": table, "out_dir": str(out_dir)}
