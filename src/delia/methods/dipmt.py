"""DiPMT (Ghazvininejad et al. 2023, "Dictionary-based Phrase-level Prompting of Large Language Models for
Machine Translation"), translation tasks only, no training.

The paper takes word translations from a bilingual dictionary and adds, after the source sentence, one
hint per rare source word: `In this context, the word "X" means "Y".`, in the evaluated prompt and in its
few-shot examples. No dictionary ships with delia, so one is induced from the task's own sentence pairs:

  c(s)     = number of pairs whose source side contains word s (likewise c(t) on the target side)
  c(s, t)  = number of pairs containing s on the source side and t on the target side
  Dice(s, t) = 2 c(s, t) / (c(s) + c(t))
  entry(s) = the t with the highest Dice (ties: more co-occurrences, then alphabetical), kept when
             c(s, t) >= MIN_COUNT, Dice >= MIN_DICE, and s is also t's best source (mutual best, so
             one target word is not the hint for several source words)

Words are lower-cased `\\w+` runs (digits-only runs skipped). Document-level examples whose source and
target have the same number of lines are aligned line by line. A prompt gets hints for its rarest
dictionary words first, at most MAX_HINTS, skipping function words (in more than FREQUENT_SHARE of the
pairs): the paper hints rare words only. The k few-shot
examples (`icl.k`) come from the task data, picked with the run seed, never the evaluated example.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import product
from typing import TYPE_CHECKING

from delia.core.example import Example
from delia.methods._common import (
    demonstration_turns,
    edit_last_user,
    pick_demonstrations,
    require_task_kind,
    task_only_plan,
    with_prior_turns,
)
from delia.methods.base import ExampleTransform, Method, MethodPlan, StageDirs

if TYPE_CHECKING:
    from delia.core.config import RunConfig

MIN_COUNT = 3
MIN_DICE = 0.3
MAX_HINTS = 8
FREQUENT_SHARE = 0.05  # a source word in more than this share of the pairs (and in more than FREQUENT_MIN)
FREQUENT_MIN = 5  # is a function word: the paper hints rare words only
WORD = re.compile(r"\w+")
ANSWER_PREFIX = re.compile(r"^\s*Sure, here is[^:\n]*:\s*", re.I)


def words(text: str) -> set[str]:
    return {w for w in WORD.findall(text.lower()) if not w.isdigit()}


def source_and_target(example: Example) -> tuple[str, str]:
    """The text to translate and its reference. The builder's layout is "source\\n\\ninstruction" (its
    instruction is in meta); otherwise (e.g. TELL's files, instruction first) the longest paragraph with as
    many lines as the reference, or the longest paragraph."""
    target = ANSWER_PREFIX.sub("", example.response).strip()
    if "source_text" in example.meta:
        return str(example.meta["source_text"]).strip(), target
    content = example.instruction
    instruction = str(example.meta.get("instruction") or "")
    if instruction and content.rstrip().endswith(instruction):
        return content.rstrip()[: -len(instruction)].strip(), target
    paragraphs = [p for p in content.split("\n\n") if p.strip()]
    lines = len(non_empty_lines(target))
    same_shape = [p for p in paragraphs if len(non_empty_lines(p)) == lines]
    return max(same_shape if lines > 1 and same_shape else paragraphs, key=len).strip(), target


def non_empty_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def aligned_pairs(examples: list[Example]) -> list[tuple[str, str]]:
    pairs = []
    for example in examples:
        source, target = source_and_target(example)
        source_lines, target_lines = non_empty_lines(source), non_empty_lines(target)
        if len(source_lines) > 1 and len(source_lines) == len(target_lines):
            pairs.extend(zip(source_lines, target_lines, strict=True))
        elif source and target:
            pairs.append((source, target))
    return pairs


@dataclass
class Dictionary:
    entries: dict[str, str] = field(default_factory=dict)  # source word -> target word
    dice: dict[str, float] = field(default_factory=dict)
    source_counts: Counter[str] = field(default_factory=Counter)
    pairs: int = 0

    def frequent(self, word: str) -> bool:
        return self.source_counts[word] > max(FREQUENT_SHARE * self.pairs, FREQUENT_MIN)

    def hints(self, text: str, limit: int = MAX_HINTS) -> list[tuple[str, str]]:
        """(source word, translation) for the text's rare dictionary words, rarest first."""
        known = [w for w in words(text) if w in self.entries and not self.frequent(w)]
        known.sort(key=lambda w: (self.source_counts[w], w))
        return [(w, self.entries[w]) for w in known[:limit]]


def rank(score: float, count: int, word: str) -> tuple[float, int, str]:
    """Sort key, best first: highest Dice, then most co-occurrences, then alphabetical (deterministic)."""
    return (-score, -count, word)


def induce_dictionary(
    pairs: list[tuple[str, str]], min_count: int = MIN_COUNT, min_dice: float = MIN_DICE
) -> Dictionary:
    """Dice-coefficient word alignment over sentence pairs (see the module docstring)."""
    source_counts: Counter[str] = Counter()
    target_counts: Counter[str] = Counter()
    joint: Counter[tuple[str, str]] = Counter()
    for source, target in pairs:
        source_words, target_words = words(source), words(target)
        source_counts.update(source_words)
        target_counts.update(target_words)
        joint.update(product(source_words, target_words))
    candidates: dict[str, list[tuple[float, int, str]]] = defaultdict(list)
    for (s, t), count in joint.items():
        if count >= min_count:
            candidates[s].append((2 * count / (source_counts[s] + target_counts[t]), count, t))
    best = {s: min(options, key=lambda c: rank(*c)) for s, options in candidates.items()}
    claimant: dict[str, tuple[tuple[float, int, str], str]] = {}  # target word -> (rank, its best source)
    for s, (score, count, t) in best.items():
        if t not in claimant or rank(score, count, s) < claimant[t][0]:
            claimant[t] = (rank(score, count, s), s)
    dictionary = Dictionary(source_counts=source_counts, pairs=len(pairs))
    for s, (score, _, t) in sorted(best.items()):
        if score >= min_dice and claimant[t][1] == s:
            dictionary.entries[s] = t
            dictionary.dice[s] = round(score, 4)
    return dictionary


def hint_text(hints: list[tuple[str, str]]) -> str:
    return " ".join(f'In this context, the word "{s}" means "{t}".' for s, t in hints)


def with_hints(example: Example, dictionary: Dictionary, keep_id: bool) -> Example:
    hints = dictionary.hints(source_and_target(example)[0])
    if not hints:
        return example
    content = f"{example.instruction}\n\n{hint_text(hints)}"
    return edit_last_user(example, content, keep_id, dipmt_hints=[list(h) for h in hints])


def dictionary_prompts(pool: list[Example], dictionary: Dictionary, k: int, seed: int) -> ExampleTransform:
    def transform(examples: list[Example]) -> list[Example]:
        out = []
        for example in examples:
            demos = [
                with_hints(d, dictionary, keep_id=False) for d in pick_demonstrations(pool, example, k, seed)
            ]
            hinted = with_hints(example, dictionary, keep_id=True)
            out.append(with_prior_turns(hinted, demonstration_turns(demos), dipmt_demonstrations=len(demos)))
        return out

    return transform


class DiPMT(Method):
    name = "dipmt"
    description = (
        "translation only: dictionary hints induced from the training pairs + examples in the prompt"
    )
    tasks = ("translation",)

    def plan(self, config: RunConfig, task: list[Example], stage_dirs: StageDirs | None = None) -> MethodPlan:
        require_task_kind(self.name, self.tasks, config, task)
        pairs = aligned_pairs(task)
        dictionary = induce_dictionary(pairs)
        k = config.options("icl").k  # the demonstrations are ICL's: one knob for both
        return task_only_plan(
            train=False,
            eval_transform=dictionary_prompts(list(task), dictionary, k, config.seed),
            notes=[
                f"no training: dictionary of {len(dictionary.entries)} words induced (Dice) from "
                f"{len(pairs)} sentence pairs; up to {MAX_HINTS} hints per prompt, "
                f"{k} examples (icl.k)"
            ],
        )
