"""Anisotropic diversification (DELIA stage 2): rewrite each task instruction k ways, one axis per rewrite.

For each example, k axes are drawn (without replacement while the configured set lasts). An LLM rewrites
the located instruction part along its axis (`rounds` tries, new seed each); a rewrite is kept only if it
passes every check in `accept.py`. Slots still empty then get the axis's rule-based rewrite when one
exists (`rules.py`), under the same checks. An example with no accepted rewrite falls back to its
original instruction. The report counts all of it per axis, LLM and rule separately.

The rewrites replace the originals (k=1: as many examples out as in); `keep_originals` keeps each original
beside its rewrites, so the diversified set is (k+1) times the task, as in the paper.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delia.core.config import DiversifyConfig
from delia.core.errors import ConfigError
from delia.core.example import Example
from delia.core.io import write_json
from delia.data.io import write_jsonl
from delia.generation.base import Backend
from delia.synth.accept import MeaningCheck, form_problem, normalise
from delia.synth.axes import (
    axis_kind,
    axis_problem,
    check_axes,
    clean_rewrite,
    pick_direction,
    rewrite_prompt,
)
from delia.synth.ledger import AxisLedger
from delia.synth.locate import InstructionSpan, locate_instruction
from delia.synth.rules import rule_rewrite


@dataclass
class Slot:
    """One requested rewrite of one example along one axis."""

    example: int
    axis: str
    direction: int
    text: str | None = None
    method: str | None = None
    similarity: float | None = None


def report_path(out_path: Path) -> Path:
    return out_path.with_name(f"{out_path.stem}.report.json")


def draw_slots(n_examples: int, k: int, axes: list[str], rng: random.Random) -> list[Slot]:
    """k axes per example, without replacement until the set is used up, then a fresh shuffle."""
    slots = []
    for index in range(n_examples):
        order: list[str] = []
        while len(order) < k:
            pool = list(axes)
            rng.shuffle(pool)
            order += pool
        slots += [Slot(index, axis, pick_direction(axis, rng)) for axis in order[:k]]
    return slots


class Judge:
    """Applies the acceptance checks to a batch of candidate rewrites and fills the slots that pass."""

    def __init__(self, spans: list[InstructionSpan], keep_tokens: list[str], meaning: MeaningCheck) -> None:
        self.spans = spans
        self.keep_tokens = keep_tokens
        self.meaning = meaning
        self.accepted: dict[int, list[str]] = {}

    def __call__(self, candidates: list[tuple[Slot, str]], method: str, ledger: AxisLedger) -> None:
        originals = [self.spans[slot.example].instruction for slot, _ in candidates]
        reasons = [
            form_problem(original, text, self.keep_tokens, [])
            or axis_problem(slot.axis, slot.direction, original, text)
            for original, (slot, text) in zip(originals, candidates, strict=True)
        ]
        scored = [i for i, reason in enumerate(reasons) if reason is None]
        scores = dict(
            zip(
                scored,
                self.meaning.scores([originals[i] for i in scored], [candidates[i][1] for i in scored]),
                strict=True,
            )
        )
        for index, (slot, text) in enumerate(candidates):
            ledger.count(slot.axis, f"{method}_attempts")
            reason = reasons[index]
            kept = self.accepted.setdefault(slot.example, [])
            if reason is None and scores[index] < self.meaning.threshold:
                reason = "meaning"
            elif reason is None and any(normalise(text) == normalise(other) for other in kept):
                reason = "duplicate"
            if reason is not None:
                ledger.reject(slot.axis, method, reason, text)
                continue
            slot.text, slot.method, slot.similarity = text, method, round(float(scores[index]), 4)
            kept.append(text)
            ledger.count(slot.axis, f"{method}_accepted")


def _llm_rounds(
    slots: list[Slot],
    spans: list[InstructionSpan],
    backend: Backend,
    cfg: DiversifyConfig,
    rounds: int,
    judge: Judge,
    ledger: AxisLedger,
    rng: random.Random,
) -> None:
    # A rewrite is one paragraph: stopping at a blank line saves the tokens of any chatter after it.
    previous_stops = getattr(backend, "stop_strings", None)
    if previous_stops is not None:
        backend.stop_strings = ["\n\n"]
    try:
        for round_index in range(rounds):
            pending = [slot for slot in slots if slot.text is None]
            if not pending:
                return
            if round_index:  # a retry may take the axis's other direction
                for slot in pending:
                    slot.direction = pick_direction(slot.axis, rng)
            prompts = [
                rewrite_prompt(s.axis, s.direction, spans[s.example].instruction, cfg.keep_tokens)
                for s in pending
            ]
            sampling = cfg.sampling.model_copy(update={"seed": cfg.sampling.seed + round_index})
            outputs = backend.generate(prompts, sampling)
            candidates = [(slot, clean_rewrite(text)) for slot, text in zip(pending, outputs, strict=True)]
            judge(candidates, "llm", ledger)
    finally:
        if previous_stops is not None:
            backend.stop_strings = previous_stops


def _rule_fallback(
    slots: list[Slot], spans: list[InstructionSpan], judge: Judge, ledger: AxisLedger, rng: random.Random
) -> None:
    candidates = []
    for slot in slots:
        if slot.text is not None:
            continue
        rewrite = rule_rewrite(slot.axis, spans[slot.example].instruction, rng)
        if rewrite is None:
            reason = "not_applicable" if axis_kind(slot.axis) != "llm" else "no_rule_for_axis"
            ledger.count(slot.axis, f"reject:rule:{reason}")
            continue
        candidates.append((slot, rewrite))
    judge(candidates, "rule", ledger)


def only_instruction_changed(before: Example, after: Example, span: InstructionSpan) -> bool:
    """The response and every other turn byte-identical; the last user turn keeps its head and tail."""
    last_user = max(i for i, m in enumerate(before.messages) if m["role"] == "user")
    others_same = all(
        a == b for i, (a, b) in enumerate(zip(before.messages, after.messages, strict=True)) if i != last_user
    )
    text = after.messages[last_user]["content"]
    return (
        others_same
        and after.response == before.response
        and text.startswith(span.head)
        and text.endswith(span.tail)
    )


def _build_outputs(
    task: list[Example], spans: list[InstructionSpan], slots: list[Slot], keep_originals: bool = False
) -> tuple[list[Example], int, int]:
    """Accepted rewrites per example in slot order, after the original itself with `keep_originals`; the
    original (marked) where none passed."""
    by_example: dict[int, list[Slot]] = {}
    for slot in slots:
        if slot.text is not None:
            by_example.setdefault(slot.example, []).append(slot)
    outputs: list[Example] = []
    fallbacks = guard_failures = 0
    for index, example in enumerate(task):
        if keep_originals:
            outputs.append(example)
        produced = 0
        for slot in by_example.get(index, []):
            new = example.with_instruction(
                spans[index].join(slot.text or ""),
                original_id=example.id,
                axis=slot.axis,
                rewrite=slot.method,
                similarity=slot.similarity,
            )
            if not only_instruction_changed(example, new, spans[index]):
                guard_failures += 1
                continue
            outputs.append(new)
            produced += 1
        if not produced:
            fallbacks += 1
        if not produced and not keep_originals:  # a kept original already stands for it
            outputs.append(
                Example(
                    messages=example.messages,
                    source=example.source,
                    meta={**example.meta, "original_id": example.id, "fallback": True},
                )
            )
    return outputs, fallbacks, guard_failures


def diversify(
    task: list[Example],
    backend: Backend | None,
    cfg: DiversifyConfig,
    out_path: Path,
    *,
    rounds: int = 2,
    rule_fallback: bool = True,
    embedder: Any = "auto",
) -> tuple[list[Example], dict[str, Any]]:
    """Rewrite each example's instruction k ways; write the JSONL and `<stem>.report.json`; return both."""
    check_axes(cfg.axes)
    if cfg.k < 1:
        raise ConfigError("diversify.k", "must be >= 1")
    if backend is None and not rule_fallback:
        raise ConfigError("diversify.backend", "no LLM backend and rule rewrites off: nothing could rewrite")
    if embedder == "auto":
        from delia.synth.embed import load_embedder  # imports torch, which rule rewrites alone never need

        embedder = load_embedder()
    started = time.perf_counter()
    out_path = Path(out_path)
    spans = [locate_instruction(ex, cfg.instruction_field, cfg.separator, cfg.regex) for ex in task]
    rng = random.Random(cfg.sampling.seed)
    slots = draw_slots(len(task), cfg.k, cfg.axes, rng)
    ledger = AxisLedger(cfg.axes)
    for slot in slots:
        ledger.count(slot.axis, "drawn")
    meaning = MeaningCheck(embedder, cfg.min_similarity)
    judge = Judge(spans, cfg.keep_tokens, meaning)
    if backend is not None and rounds > 0:
        _llm_rounds(slots, spans, backend, cfg, rounds, judge, ledger, rng)
    if rule_fallback:
        _rule_fallback(slots, spans, judge, ledger, rng)
    outputs, fallbacks, guard_failures = _build_outputs(task, spans, slots, cfg.keep_originals)
    write_jsonl(out_path, outputs)
    report = _report(
        task,
        slots,
        outputs,
        fallbacks,
        guard_failures,
        ledger,
        meaning,
        backend,
        cfg,
        rounds,
        rule_fallback,
        time.perf_counter() - started,
    )
    write_json(report_path(out_path), report)
    return outputs, report


def _report(
    task: list[Example],
    slots: list[Slot],
    outputs: list[Example],
    fallbacks: int,
    guard_failures: int,
    ledger: AxisLedger,
    meaning: MeaningCheck,
    backend: Backend | None,
    cfg: DiversifyConfig,
    rounds: int,
    rule_fallback: bool,
    seconds: float,
) -> dict[str, Any]:
    accepted = [s for s in slots if s.text is not None]
    stats = getattr(backend, "stats", None)
    return {
        "stage": "diversify",
        "examples": len(task),
        "k": cfg.k,
        "originals_kept": cfg.keep_originals,
        "requested": len(slots),
        "accepted": len(accepted),
        "accepted_llm": sum(s.method == "llm" for s in accepted),
        "accepted_rule": sum(s.method == "rule" for s in accepted),
        "acceptance": round(len(accepted) / len(slots), 3) if slots else None,
        "fallbacks": fallbacks,
        "guard_failures": guard_failures,
        "outputs": len(outputs),
        "meaning_check": meaning.description,
        "keep_tokens": cfg.keep_tokens,
        "backend": getattr(backend, "name", None),
        "llm_rounds": rounds if backend is not None else 0,
        "rule_fallback": rule_fallback,
        "sampling": cfg.sampling.model_dump(mode="json"),
        "new_tokens": stats.new_tokens if stats else 0,
        "tokens_per_second": round(stats.tokens_per_second, 2) if stats else None,
        "seconds": round(seconds, 2),
        "axes": ledger.summary(),
    }
