"""How close the special token's hidden state is to a keyword's, block by block (paper Figure 2, Table 1).

For each template (e.g. "The format is {token}.") the template is filled once with the special token and once
with each keyword. At every hidden-state index l (0 = embedding output, 1..L = output of transformer block l,
as in `output_hidden_states`; HF applies the final norm to index L) we take
  s_l = hidden state of the special token (it must be one token),
  k_l = mean of the hidden states of the keyword's tokens (a keyword may split into several),
and report ||s_l - k_l||_2 averaged over templates (plus its standard deviation), and a relative distance
||s_l - k_l|| / ((||s_l|| + ||k_l||) / 2) that is comparable across depths, where raw norms grow.
A model whose tokenizer lacks the special token (the base model, and methods whose runs never add it:
common IT, DMT, fact-based) is "not applicable" by default (missing_token="skip"). With missing_token="add"
it is probed with the token added for the probe only: a copy of its tokenizer keeps the token as one token,
and that token's input embedding is the mean of the input embeddings of the pieces the model's own tokenizer
splits it into (for "<sep>": "<", "sep", ">"), which is what the plain-text model reads where "<sep>" is
written. The model itself is not changed (the row is fed through inputs_embeds); the result records the
init and its pieces.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from delia.core.errors import DeliaError
from delia.core.io import write_json
from delia.probe.loading import ProbeTarget, load_target
from delia.probe.plots import plot_repr
from delia.probe.tables import write_csv, write_table

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PLACEHOLDER = "{token}"
DEFAULT_TOKEN = "<sep>"
DEFAULT_KEYWORDS = ("json", "thought")
MISSING_TOKEN_MODES = ("skip", "add")  # a tokenizer without the token: "n/a", or add it for the probe
PIECES_INIT = "mean_of_pieces"
DEFAULT_TEMPLATES = (
    "The format is {token}.",
    "The format requirement is {token}, and you need to understand what it entails.",
    "Answer in the {token} format.",
    "Please write your reply as {token} and nothing else.",
    "Output: {token}",
    "You must follow the {token} format when you evaluate the response.",
    "Return the result using {token}.",
    "Check the answer for hallucinations and respond in {token}.",
)


@dataclass(frozen=True)
class FilledContext:
    """A template with its placeholder replaced, and the character span of the replacement."""

    text: str
    start: int
    end: int


def fill_template(template: str, filler: str) -> FilledContext:
    if template.count(PLACEHOLDER) != 1:
        raise DeliaError(f"template {template!r} must contain {PLACEHOLDER} exactly once")
    start = template.index(PLACEHOLDER)
    return FilledContext(template.replace(PLACEHOLDER, filler), start, start + len(filler))


def wrap_in_chat(tokenizer: PreTrainedTokenizerBase, context: FilledContext) -> FilledContext:
    """Render the context as a user turn of the chat template, keeping the span pointing at the filler."""
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": context.text}], tokenize=False)
    shift = rendered.find(context.text)
    if shift < 0:
        raise DeliaError("the chat template changed the context text; use the plain (non --chat) contexts")
    return FilledContext(rendered, context.start + shift, context.end + shift)


def span_token_positions(offsets: list[tuple[int, int]], start: int, end: int) -> list[int]:
    """Token positions whose character range overlaps [start, end) ('Ġjson' counts for 'json')."""
    return [i for i, (a, b) in enumerate(offsets) if a < end and b > start and b > a]


def special_token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int | None:
    return tokenizer.get_vocab().get(token)


@dataclass(frozen=True)
class AddedToken:
    """A special token added for the probe: the tokenizer copy that knows it, its id there, its embedding."""

    tokenizer: Any
    token_id: int
    row: torch.Tensor
    init: dict[str, Any]


def add_token_for_probe(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, token: str) -> AddedToken:
    """`token` as one special token of a tokenizer copy, embedded as the mean of its plain-text pieces."""
    piece_ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    if not piece_ids:
        raise DeliaError(f"{token!r} has no pieces in this tokenizer to average")
    probe_tokenizer = copy.deepcopy(tokenizer)  # the caller's tokenizer stays as it is
    probe_tokenizer.add_tokens([token], special_tokens=True)
    embeddings = model.get_input_embeddings()
    with torch.inference_mode():
        pieces = embeddings(torch.tensor(piece_ids, device=embeddings.weight.device))
    init = {"kind": PIECES_INIT, "pieces": tokenizer.convert_ids_to_tokens(piece_ids), "piece_ids": piece_ids}
    return AddedToken(probe_tokenizer, probe_tokenizer.convert_tokens_to_ids(token), pieces.mean(0), init)


def model_outputs(model: PreTrainedModel, ids: list[int], added: AddedToken | None) -> Any:
    """The forward with hidden states; an added token's positions get its row through inputs_embeds."""
    embeddings = model.get_input_embeddings()
    input_ids = torch.tensor([ids], device=embeddings.weight.device)
    with torch.inference_mode():
        if added is None:
            return model(input_ids=input_ids, output_hidden_states=True)
        mask = input_ids == added.token_id
        embeds = embeddings(input_ids.masked_fill(mask, 0))  # the added id has no row of its own
        embeds[mask] = added.row.to(embeds.dtype)
        return model(inputs_embeds=embeds, output_hidden_states=True)


def span_hidden_states(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    context: FilledContext,
    added: AddedToken | None = None,
) -> tuple[torch.Tensor, list[int]]:
    """[L+1, H] hidden states at the span (mean over its tokens), and the span's token ids."""
    encoded = tokenizer(context.text, return_offsets_mapping=True, add_special_tokens=False)
    positions = span_token_positions(encoded["offset_mapping"], context.start, context.end)
    if not positions:
        raise DeliaError(f"no token covers {context.text[context.start : context.end]!r} in {context.text!r}")
    outputs = model_outputs(model, encoded["input_ids"], added)
    stacked = torch.stack([layer[0, positions].float().mean(0) for layer in outputs.hidden_states])
    return stacked.cpu(), [encoded["input_ids"][i] for i in positions]


def l2_and_relative(special: torch.Tensor, keyword: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer ||s - k|| and ||s - k|| / mean(||s||, ||k||) for [L+1, H] inputs."""
    l2 = torch.linalg.vector_norm(special - keyword, dim=-1)
    scale = (torch.linalg.vector_norm(special, dim=-1) + torch.linalg.vector_norm(keyword, dim=-1)) / 2
    return l2, l2 / scale.clamp_min(1e-12)


def not_applicable(run: str, token: str, reason: str) -> dict[str, Any]:
    return {"run": run, "token": token, "applicable": False, "reason": reason, "keywords": {}}


def repr_distances(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    run: str,
    token: str = DEFAULT_TOKEN,
    keywords: tuple[str, ...] | list[str] = DEFAULT_KEYWORDS,
    templates: tuple[str, ...] | list[str] = DEFAULT_TEMPLATES,
    chat: bool = False,
    missing_token: str = "skip",
) -> dict[str, Any]:
    """Per-layer L2 distances of `token` to each keyword, averaged over templates (module docstring)."""
    token_id = special_token_id(tokenizer, token)
    added = None
    if token_id is None:
        if missing_token != "add":
            return not_applicable(run, token, f"{token!r} is not in this model's tokenizer")
        added = add_token_for_probe(model, tokenizer, token)
        tokenizer, token_id = added.tokenizer, added.token_id
    per_keyword_l2: dict[str, list[torch.Tensor]] = {k: [] for k in keywords}
    per_keyword_rel: dict[str, list[torch.Tensor]] = {k: [] for k in keywords}
    pieces: dict[str, list[int]] = {k: [] for k in keywords}
    for template in templates:
        special_ctx = fill_template(template, token)
        special_ctx = wrap_in_chat(tokenizer, special_ctx) if chat else special_ctx
        special_states, special_ids = span_hidden_states(model, tokenizer, special_ctx, added)
        if special_ids != [token_id]:
            return not_applicable(run, token, f"the tokenizer does not keep {token!r} as one token")
        for keyword in keywords:
            keyword_ctx = fill_template(template, keyword)
            keyword_ctx = wrap_in_chat(tokenizer, keyword_ctx) if chat else keyword_ctx
            keyword_states, keyword_ids = span_hidden_states(model, tokenizer, keyword_ctx)
            l2, relative = l2_and_relative(special_states, keyword_states)
            per_keyword_l2[keyword].append(l2)
            per_keyword_rel[keyword].append(relative)
            pieces[keyword].append(len(keyword_ids))
    results = {}
    for keyword in keywords:
        l2 = torch.stack(per_keyword_l2[keyword])
        results[keyword] = {
            "l2_mean": l2.mean(0).tolist(),
            "l2_std": l2.std(0, unbiased=False).tolist(),
            "relative_mean": torch.stack(per_keyword_rel[keyword]).mean(0).tolist(),
            "keyword_tokens_per_template": pieces[keyword],
        }
    return {
        "run": run,
        "token": token,
        "applicable": True,
        "reason": None,
        "token_row": "model" if added is None else "added_for_probe",
        "token_init": None if added is None else added.init,
        "n_blocks": len(results[keywords[0]]["l2_mean"]) - 1,
        "n_templates": len(templates),
        "keywords": results,
    }


def landmark_blocks(n_blocks: int) -> dict[str, int]:
    """First, middle and last transformer block (1-based, as hidden-state indices)."""
    return {"first": 1, "middle": (n_blocks + 1) // 2, "last": n_blocks}


def summary_rows(results: list[dict[str, Any]], keywords: list[str]) -> list[dict[str, Any]]:
    """The Table 1 layout: one row per run, L2 at the first / middle / last block per keyword, or "n/a";
    a `token_row` column says whose embedding the token had once any run's token was added for the probe."""
    rows = []
    show_row = any(result.get("token_row") == "added_for_probe" for result in results)
    for result in results:
        row: dict[str, Any] = {"run": result["run"]}
        if show_row:
            row["token_row"] = token_row_label(result)
        for keyword in keywords:
            if not result["applicable"]:
                row.update({f"{keyword}@{where}": "n/a" for where in ("first", "middle", "last")})
                continue
            curve = result["keywords"][keyword]["l2_mean"]
            for where, block in landmark_blocks(result["n_blocks"]).items():
                row[f"{keyword}@{where}"] = curve[block]
        rows.append(row)
    return rows


def token_row_label(result: dict[str, Any]) -> str:
    """Whose row the token's embedding was: the model's own, or the probe's mean of the plain pieces."""
    if not result["applicable"]:
        return "n/a"
    if result.get("token_row") != "added_for_probe":
        return "model's own"
    pieces = " ".join(result["token_init"]["pieces"])
    return f"added for the probe: mean of {len(result['token_init']['pieces'])} pieces ({pieces})"


def long_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One CSV row per (run, keyword, hidden-state index)."""
    rows = []
    for result in results:
        for keyword, curves in result["keywords"].items():
            for index, l2 in enumerate(curves["l2_mean"]):
                rows.append(
                    {
                        "run": result["run"],
                        "token": result["token"],
                        "keyword": keyword,
                        "block": index,
                        "l2_mean": l2,
                        "l2_std": curves["l2_std"][index],
                        "relative_mean": curves["relative_mean"][index],
                    }
                )
    return rows


def run_repr_probe(
    targets: list[ProbeTarget],
    out_dir: Path,
    token: str = DEFAULT_TOKEN,
    keywords: list[str] | None = None,
    templates: list[str] | None = None,
    chat: bool = False,
    device: str = "cpu",
    missing_token: str = "skip",
) -> dict[str, Any]:
    """Measure every target, then write repr.json, repr.csv, repr_table.{csv,md} and repr.png into out_dir.

    `missing_token`: "skip" reports a model whose tokenizer lacks the token as n/a; "add" probes it with the
    token added for the probe (module docstring), recorded per run in `token_row` / `token_init`."""
    if missing_token not in MISSING_TOKEN_MODES:
        raise DeliaError(f"missing_token {missing_token!r}: choose {' or '.join(MISSING_TOKEN_MODES)}")
    keywords = list(keywords or DEFAULT_KEYWORDS)
    templates = list(templates or DEFAULT_TEMPLATES)
    for template in templates:
        fill_template(template, token)  # fail on a bad template before loading any model
    results = []
    for target in targets:
        model, tokenizer = load_target(target, device)
        results.append(
            repr_distances(model, tokenizer, target.name, token, keywords, templates, chat, missing_token)
        )
        del model
    table = summary_rows(results, keywords)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {
        "token": token,
        "keywords": keywords,
        "templates": templates,
        "chat": chat,
        "missing_token": missing_token,
        "added_token_init": PIECES_INIT if missing_token == "add" else None,
    }
    write_json(out_dir / "repr.json", {"settings": settings, "table": table, "results": results})
    write_csv(
        out_dir / "repr.csv", long_rows(results) or [{"run": r["run"], "applicable": False} for r in results]
    )
    write_table(out_dir, "repr_table", table)
    plot_repr(results, keywords, out_dir / "repr.png")
    return {"results": results, "table": table, "out_dir": str(out_dir)}
