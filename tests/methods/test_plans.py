"""The peer methods' plans and data transforms (fast), and one tiny pipeline run per method (slow)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from delia.core.config import MixConfig, RunConfig, build_config
from delia.core.errors import ConfigError, DeliaError
from delia.core.example import Example
from delia.data.io import read_examples, write_jsonl
from delia.methods import get_method
from delia.methods.fact_based import FactOptions

SEP_ANSWERS = [
    "{'thought': \"It matches the query.\", 'hallucination': 'no'}",
    "{'thought': 'The date is invented.', 'hallucination': 'yes'}",
    "{'thought': 'Consistent with the request.', 'hallucination': 'no'}",
    "{'thought': \"Nothing made up.\", 'hallucination': 'no'}",
    "{'thought': 'The name is wrong.', 'hallucination': 'yes'}",
    "{'thought': 'Accurate summary.', 'hallucination': 'no'}",
]


def sep_task(n: int = 6) -> list[Example]:
    return [
        Example(
            messages=[
                {"role": "user", "content": f"context {i}\n\nCheck it in the <sep> format."},
                {"role": "assistant", "content": SEP_ANSWERS[i % len(SEP_ANSWERS)]},
            ]
        )
        for i in range(n)
    ]


def diverse_examples(n: int) -> list[Example]:
    return [
        Example(
            messages=[
                {"role": "user", "content": f"Tell me fact {i}."},
                {"role": "assistant", "content": f"F{i}."},
            ],
            source="diverse",
        )
        for i in range(n)
    ]


def plan_of(method: str, examples: list[Example] | None = None, **overrides: Any) -> Any:
    config = build_config({"method": method, **overrides})
    return get_method(method).plan(config, examples if examples is not None else sep_task())


# ----------------------------------------------------------------------------------------------- TELL


def test_tell_prepends_the_anchor_to_task_examples_only() -> None:
    plan = plan_of("tell", tell={"anchor": "ANCHOR-XYZ"})
    assert (plan.special_tokens, plan.diversify, plan.use_diverse, plan.schedule) == (
        [],
        False,
        True,
        "shuffle",
    )
    task, diverse = sep_task(3), diverse_examples(3)
    out = plan.task_transform([*task, *diverse])
    for before, after in zip(task, out[:3], strict=True):
        assert after.instruction == f"ANCHOR-XYZ\n\n{before.instruction}"
        assert after.response == before.response and after.source == "task"
    assert out[3:] == diverse  # general data untouched
    evals = plan.eval_transform(task[:1])
    assert evals[0].instruction.startswith("ANCHOR-XYZ\n\n") and evals[0].id == task[0].id


def test_tell_self_generated_anchor_is_seeded_and_unusual() -> None:
    first = plan_of("tell", seed=3).task_transform(sep_task(1))[0].instruction.split("\n\n")[0]
    again = plan_of("tell", seed=3).task_transform(sep_task(1))[0].instruction.split("\n\n")[0]
    other = plan_of("tell", seed=4).task_transform(sep_task(1))[0].instruction.split("\n\n")[0]
    assert first == again != other
    assert first.startswith("[[") and any(ch.isdigit() for ch in first)


def test_tell_rejects_an_empty_anchor() -> None:
    with pytest.raises(ConfigError, match=r"tell\.anchor"):
        plan_of("tell", tell={"anchor": "  "})


# ------------------------------------------------------------------------------------------------ DMT


@pytest.mark.parametrize("order", ["task_first", "diverse_first"])
def test_dmt_trains_task_then_general_data_or_the_reverse(tmp_path: Path, order: str) -> None:
    from delia.mix import mix

    plan = plan_of("dmt", mix={"ratio": 2, "two_stage_order": order}, dmt={"variant": "sequential"})
    assert (plan.schedule, plan.use_diverse, plan.diversify, plan.special_tokens) == (
        "two_stage",
        True,
        False,
        [],
    )
    diverse_path = tmp_path / "diverse.jsonl"
    write_jsonl(diverse_path, diverse_examples(10))
    cfg = MixConfig(schedule=plan.schedule, ratio=plan.ratio, two_stage_order=plan.two_stage_order)
    mix(sep_task(3), diverse_path, cfg, tmp_path / "mixed.jsonl")
    sources = [ex.source for ex in read_examples(tmp_path / "mixed.jsonl")]
    stages = ["task"] * 3 + ["diverse"] * 6
    assert sources == (stages if order == "task_first" else stages[::-1])


def test_dmt_stage_order_survives_the_trainer() -> None:
    """The trainer draws steps from the mixed file; for two_stage it must not shuffle across stages."""
    from delia.train.batching import plan_steps
    from delia.train.loop import ORDERED_SCHEDULES

    assert plan_of("dmt").schedule in ORDERED_SCHEDULES
    assert plan_steps(8, 4, 1.0, None, seed=0, shuffle=False).steps == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert plan_steps(8, 4, 2.0, None, seed=0, shuffle=False).steps[2] == [0, 1, 2, 3]


def test_dmt_needs_general_data() -> None:
    with pytest.raises(ConfigError, match=r"mix\.ratio"):
        plan_of("dmt", mix={"ratio": 0})


def test_dmt_as_published_mixes_a_share_of_the_task_into_the_general_stage(tmp_path: Path) -> None:
    """Dong et al.'s DMT: stage two is the general data with k of the task data shuffled back in."""
    from delia.mix import mix
    from delia.pipeline.effective import effective_config

    config = build_config({"method": "dmt", "mix": {"ratio": 2}, "dmt": {"k": 0.25}})
    task = sep_task(8)
    plan = get_method("dmt").plan(config, task)
    assert (plan.schedule, plan.two_stage_remix, plan.diversify, plan.special_tokens) == (
        "two_stage",
        0.25,
        False,
        [],
    )
    assert plan.notes == [
        "two stages (DMT): task -> general data at ratio 2 + 2 of 8 task examples (k = 1/4)"
    ]
    effective = effective_config(config, plan)
    assert effective.mix.two_stage_remix == 0.25
    diverse_path = tmp_path / "diverse.jsonl"
    write_jsonl(diverse_path, diverse_examples(30))
    counts = mix(task, diverse_path, effective.mix, tmp_path / "mixed.jsonl")
    mixed = read_examples(tmp_path / "mixed.jsonl")
    assert [ex.source for ex in mixed[:8]] == ["task"] * 8  # stage one: the task data
    stage_two = mixed[8:]
    assert (
        sum(ex.source == "task" for ex in stage_two) == 2 == counts["task_remixed"]
    )  # task examples in stage two
    assert sum(ex.source == "diverse" for ex in stage_two) == 16
    assert {ex.id for ex in stage_two if ex.source == "task"} <= {ex.id for ex in task}


def test_dmt_defaults_to_the_published_k_and_keeps_sequential_as_a_variant() -> None:
    from delia.methods.dmt import PUBLISHED_K
    from delia.pipeline.effective import effective_config

    assert PUBLISHED_K == 1 / 256
    published = plan_of("dmt", sep_task(30), mix={"ratio": 2})
    assert published.two_stage_remix == 1 / 256
    assert "1 of 30 task examples (k = 1/256)" in published.notes[0]  # rounded up: never none
    sequential = plan_of("dmt", mix={"ratio": 2}, dmt={"variant": "sequential"})
    assert sequential.two_stage_remix == 0.0 and "sequential" in sequential.notes[0]
    # The sequential variant's mix stage is hashed as the two_stage schedule was before DMT's k existed.
    config = build_config({"method": "dmt", "mix": {"ratio": 2}, "dmt": {"variant": "sequential"}})
    effective = effective_config(config, sequential)
    plain = build_config({"mix": {"ratio": 2, "schedule": "two_stage"}})
    assert effective.stage_hash("mix") == plain.stage_hash("mix")
    assert "two_stage_remix" not in effective.mix.model_dump()


def test_dmt_remix_needs_the_task_stage_first() -> None:
    with pytest.raises(ConfigError, match=r"dmt\.variant.*task_first"):
        plan_of("dmt", mix={"ratio": 2, "two_stage_order": "diverse_first"})
    reverse = plan_of(
        "dmt", mix={"ratio": 2, "two_stage_order": "diverse_first"}, dmt={"variant": "sequential"}
    )
    assert reverse.two_stage_order == "diverse_first" and reverse.two_stage_remix == 0.0
    with pytest.raises(ConfigError, match=r"dmt\.k"):
        build_config({"method": "dmt", "dmt": {"k": 2}})
    with pytest.raises(ConfigError, match=r"dmt\.variant"):
        build_config({"method": "dmt", "dmt": {"variant": "mixed"}})


# --------------------------------------------------------------------------------------- diverse_only


def test_diverse_only_trains_on_the_diverse_data_alone(tmp_path: Path) -> None:
    from delia.mix import mix
    from delia.pipeline.effective import effective_config

    config = build_config({"method": "diverse_only", "mix": {"ratio": 3}})
    plan = get_method("diverse_only").plan(config, sep_task(4))
    assert (plan.use_diverse, plan.diversify, plan.schedule, plan.ratio, plan.special_tokens, plan.train) == (
        True,
        False,
        "diverse_only",
        3,
        [],
        True,
    )
    diverse_path = tmp_path / "diverse.jsonl"
    write_jsonl(diverse_path, diverse_examples(20))
    counts = mix(sep_task(4), diverse_path, effective_config(config, plan).mix, tmp_path / "mixed.jsonl")
    assert counts["sources"] == {"diverse": 12}
    assert {ex.source for ex in read_examples(tmp_path / "mixed.jsonl")} == {"diverse"}
    with pytest.raises(ConfigError, match=r"mix\.ratio"):
        plan_of("diverse_only", mix={"ratio": 0})


# ------------------------------------------------------------------------------------- DELIA, Table 4

OFFICIAL_LIKE_INSTRUCTIONS = [f"Judge the context, phrasing {i}, in the <sep> format." for i in range(60)]


def official_like_task() -> list[Example]:
    """100 records over 60 instructions, as the official <sep> training set: phrasing 7 on three records."""
    phrasing = [*range(60), 7, *range(39)]
    return [
        Example(
            messages=[
                {"role": "user", "content": f"context {i}\n\n\n{OFFICIAL_LIKE_INSTRUCTIONS[p]}"},
                {"role": "assistant", "content": SEP_ANSWERS[i % len(SEP_ANSWERS)]},
            ]
        )
        for i, p in enumerate(phrasing)
    ]


@pytest.mark.parametrize(
    ("options", "parts"),
    [
        ({}, {"diverse": True, "diversified": True, "token": True}),
        ({"diverse": False}, {"diverse": False, "diversified": True, "token": True}),
        ({"diversify": False}, {"diverse": True, "diversified": False, "token": True}),
        ({"diverse": False, "diversify": False}, {"diverse": False, "diversified": False, "token": True}),
    ],
)
def test_delia_table_4_rows_each_remove_exactly_their_part(
    options: dict[str, Any], parts: dict[str, bool]
) -> None:
    plan = plan_of("delia", delia=options)
    got = {
        "diverse": plan.use_diverse,
        "diversified": plan.diversify,
        "token": plan.special_tokens == ["<sep>"],
    }
    assert got == parts
    assert (plan.schedule, plan.ratio) == (("shuffle", 10.0) if parts["diverse"] else ("task_only", 0.0))
    assert plan.task_transform is None  # the instructions are left as they are unless asked


def test_delia_without_diversified_collapses_an_already_diverse_task_to_one_instruction() -> None:
    task = official_like_task()
    plan = plan_of("delia", task, delia={"diversify": False, "canonical_instruction": "most_common"})
    assert plan.diversify is False and plan.use_diverse is True and plan.special_tokens == ["<sep>"]
    assert plan.notes[-1] == f"instructions collapsed: 60 distinct -> 1, {OFFICIAL_LIKE_INSTRUCTIONS[7]!r}"
    collapsed = plan.task_transform(task)
    assert len(collapsed) == 100
    assert {ex.instruction.split("\n\n\n")[1] for ex in collapsed} == {OFFICIAL_LIKE_INSTRUCTIONS[7]}
    for before, after in zip(task, collapsed, strict=True):  # only the instruction part changes
        assert after.instruction.split("\n\n\n")[0] == before.instruction.split("\n\n\n")[0]
        assert after.response == before.response and after.source == "task"


def test_delia_canonical_instruction_given_as_text() -> None:
    text = "Check the response for hallucinations; answer in the <sep> format."
    plan = plan_of("delia", official_like_task(), delia={"diversify": False, "canonical_instruction": text})
    assert {ex.instruction.rsplit("\n\n", 1)[1] for ex in plan.task_transform(official_like_task())} == {text}
    with pytest.raises(
        ConfigError, match=r"delia\.canonical_instruction.*<sep>"
    ):  # the token would go untrained
        plan_of("delia", delia={"diversify": False, "canonical_instruction": "Check it."})
    with pytest.raises(ConfigError, match=r"delia\.canonical_instruction.*delia\.diversify=false"):
        plan_of("delia", delia={"canonical_instruction": "most_common"})  # diversification would be undone
    with pytest.raises(ConfigError, match=r"delia\.canonical_instruction"):
        build_config({"delia": {"canonical_instruction": "  "}})


def test_delia_options_dump_as_before_unless_an_instruction_is_set() -> None:
    """A new option must not change the `delia` section's dump, and so every DELIA run's train hash."""
    assert build_config({}).options("delia").model_dump() == {"diverse": True, "diversify": True}
    changed = build_config({"delia": {"diversify": False, "canonical_instruction": "most_common"}})
    assert changed.options("delia").model_dump()["canonical_instruction"] == "most_common"
    assert changed.stage_hash("delia") != build_config({"delia": {"diversify": False}}).stage_hash("delia")


def test_delia_on_the_official_sep_set_collapses_60_instructions(shared_data: Path) -> None:
    task = read_examples(shared_data / "delia-reproduce" / "train_dataset.jsonl")
    plan = plan_of("delia", task, delia={"diversify": False, "canonical_instruction": "most_common"})
    assert "60 distinct -> 1" in plan.notes[-1]
    assert len({ex.instruction.rsplit("\n\n", 1)[1] for ex in plan.task_transform(task)}) == 1


# ------------------------------------------------------------------------------------------------ ICL


def test_icl_prepends_k_seeded_demonstrations_never_the_example_itself() -> None:
    task = sep_task(6)
    plan = plan_of("icl", task, icl={"k": 3})
    assert plan.train is False and plan.special_tokens == []
    probe = task[2].model_copy(
        update={"messages": [{"role": "system", "content": "Be brief."}, *task[2].messages]}
    )
    for example in (task[2], probe):  # in the pool by id, and by prompt content only
        out = plan.eval_transform([example])[0]
        demos = [ex for ex in task if ex.id in out.meta["icl_demonstrations"]]
        assert len(demos) == 3 and task[2] not in demos
        assert out.id == example.id and out.messages[-2:] == example.messages[-2:]
        roles = [m["role"] for m in out.messages if m["role"] != "system"]
        assert roles == ["user", "assistant"] * 4
        assert out.messages[0]["role"] == example.messages[0]["role"]  # the system turn stays first
        for demo in demos:
            assert demo.instruction in [m["content"] for m in out.messages]
    again = plan_of("icl", task, icl={"k": 3}).eval_transform([task[2]])[0]
    assert again.messages == plan.eval_transform([task[2]])[0].messages


# ---------------------------------------------------------------------------------------------- DiPMT

TOY_PAIRS = [
    ("the cat sleeps", "kötturinn sefur"),
    ("the dog sleeps", "hundurinn sefur"),
    ("the cat eats", "kötturinn borðar"),
    ("the dog eats", "hundurinn borðar"),
    ("the cat sleeps now", "kötturinn sefur núna"),
    ("the dog eats now", "hundurinn borðar núna"),
    ("the bird sings now", "fuglinn syngur núna"),
]


def translation_task(pairs: list[tuple[str, str]]) -> list[Example]:
    instruction = "Translate the English text above into Icelandic."
    return [
        Example(
            messages=[
                {"role": "user", "content": f"{src}\n\n{instruction}"},
                {"role": "assistant", "content": tgt},
            ],
            meta={"task": "translation", "direction": "en-is", "instruction": instruction},
        )
        for src, tgt in pairs
    ]


def test_dipmt_induces_the_obvious_word_pairs() -> None:
    from delia.methods.dipmt import aligned_pairs, induce_dictionary

    dictionary = induce_dictionary(aligned_pairs(translation_task(TOY_PAIRS)))
    expected = {"cat": "kötturinn", "dog": "hundurinn", "sleeps": "sefur", "eats": "borðar", "now": "núna"}
    assert {s: dictionary.entries.get(s) for s in expected} == expected
    assert "bird" not in dictionary.entries  # seen once: below MIN_COUNT
    assert "the" not in dictionary.entries  # no target word is its mutual best


def test_dipmt_aligns_document_level_examples_line_by_line() -> None:
    from delia.methods.dipmt import aligned_pairs

    doc = Example(
        messages=[
            {
                "role": "user",
                "content": "This text is in English. Translate it.\n\n the cat\nthe dog\nthe bird",
            },
            {
                "role": "assistant",
                "content": "Sure, here is the Icelandic translation: \n\n köttur\nhundur\nfugl",
            },
        ]
    )
    assert aligned_pairs([doc]) == [("the cat", "köttur"), ("the dog", "hundur"), ("the bird", "fugl")]


def test_dipmt_prompt_has_dictionary_hints_and_examples() -> None:
    task = translation_task(TOY_PAIRS)
    plan = plan_of("dipmt", task, eval={"metric": "translation"}, icl={"k": 2})
    assert plan.train is False
    probe = translation_task([("the cat eats now", "kötturinn borðar núna")])[0]
    out = plan.eval_transform([probe])[0]
    assert out.id == probe.id and out.response == probe.response
    assert 'In this context, the word "cat" means "kötturinn".' in out.instruction
    assert 'the word "eats" means "borðar"' in out.instruction
    assert [m["role"] for m in out.messages] == ["user", "assistant"] * 3


def test_dipmt_refuses_a_non_translation_task() -> None:
    with pytest.raises(ConfigError, match="translation"):
        plan_of("dipmt", sep_task())


# ------------------------------------------------------------------------------------------------ CTG

DESCRIPTION = "Answer with one short dictionary."


def ctg_prompts(tokenizer: Any, texts: list[str]) -> tuple[torch.Tensor, list[list[int]]]:
    """Left-padded chat prompts that end with the CTG marker, as the local backend feeds them."""
    plan = plan_of("ctg", ctg={"description": DESCRIPTION})
    examples = [Example(messages=[{"role": "user", "content": t}]) for t in texts]
    rendered = [
        tokenizer.apply_chat_template(ex.messages, tokenize=False, add_generation_prompt=True)
        for ex in plan.eval_transform(examples)
    ]
    plain = [
        tokenizer(
            tokenizer.apply_chat_template(ex.messages, tokenize=False, add_generation_prompt=True),
            add_special_tokens=False,
        )["input_ids"]
        for ex in examples
    ]
    tokenizer.padding_side = "left"
    batch = tokenizer(rendered, return_tensors="pt", padding=True, add_special_tokens=False)
    return batch["input_ids"], plain


def test_ctg_formula_on_hand_made_logits(tokenizer: Any) -> None:
    from delia.methods._arithmetic import PromptArithmeticProcessor

    with_logits = torch.tensor([[2.0, 0.5, -1.0, 0.0]])
    without_logits = torch.tensor([[0.0, 1.5, -1.0, 3.0]])
    seen: list[torch.Tensor] = []

    def fake_model(input_ids: torch.Tensor, **kwargs: Any) -> Any:
        seen.append(input_ids)
        return SimpleNamespace(logits=without_logits[:, None, :], past_key_values=None)

    ids, plain = ctg_prompts(tokenizer, ["Is the sky green?"])
    processor = PromptArithmeticProcessor(fake_model, tokenizer, f"\n\n{DESCRIPTION}", weight=1.5)
    out = processor(ids, with_logits)
    lp_with, lp_without = with_logits.log_softmax(-1), without_logits.log_softmax(-1)
    assert torch.allclose(out, lp_with + 1.5 * (lp_with - lp_without))
    assert seen[0][0].tolist() == plain[0]  # the "without" prompt is the prompt minus the description
    banned = with_logits.clone()
    banned[0, 1] = float("-inf")
    assert processor(ids, banned)[0, 1] == float("-inf")


def test_ctg_with_zero_weight_equals_the_plain_logits(tokenizer: Any, tiny_model: Any) -> None:
    from delia.methods.ctg import processor_factory

    ids, _ = ctg_prompts(tokenizer, ["Is the sky green?", "Name a colour that is often used for warnings."])
    mask = (ids != tokenizer.pad_token_id).long()
    processors = processor_factory(f"\n\n{DESCRIPTION}", 0.0)(tiny_model, tokenizer)
    scores = tiny_model(input_ids=ids, attention_mask=mask).logits[:, -1, :]
    assert torch.allclose(processors(ids, scores), scores.log_softmax(-1), atol=1e-6)
    options = {"attention_mask": mask, "max_new_tokens": 6, "do_sample": False, "pad_token_id": 2}
    plain = tiny_model.generate(ids, **options)
    guided = tiny_model.generate(ids, logits_processor=processors, **options)
    assert torch.equal(plain, guided)


def test_ctg_cached_variant_matches_a_full_forward(tokenizer: Any, tiny_model: Any) -> None:
    from delia.methods._arithmetic import PromptArithmeticProcessor

    ids, plain = ctg_prompts(tokenizer, ["Hi.", "Write a longer question about the weather in spring?"])
    weight = 2.0
    processor = PromptArithmeticProcessor(tiny_model, tokenizer, f"\n\n{DESCRIPTION}", weight)
    scores = torch.randn(2, tiny_model.config.vocab_size)
    with torch.no_grad():
        processor(ids, scores)
        step = torch.cat([ids, torch.tensor([[42], [77]])], dim=1)
        out = processor(step, scores)
        for row, (prompt, token) in enumerate(zip(plain, (42, 77), strict=True)):
            full = tiny_model(input_ids=torch.tensor([[*prompt, token]])).logits[0, -1].log_softmax(-1)
            expected = (1 + weight) * scores[row].log_softmax(-1) - weight * full
            assert torch.allclose(out[row], expected, atol=1e-4)


def test_ctg_plan_appends_the_description_and_keeps_ids() -> None:
    plan = plan_of("ctg", ctg={"weight": 0.5})
    assert plan.train is False and "logits_processor_factory" in plan.generation_options
    example = sep_task(1)[0]
    out = plan.eval_transform([example])[0]
    assert out.id == example.id and out.instruction.startswith(example.instruction + "\n\nThe <sep> format")
    assert "'thought'" in out.instruction and "'hallucination'" in out.instruction


def test_ctg_processor_refuses_prompts_without_the_description(tokenizer: Any, tiny_model: Any) -> None:
    from delia.methods._arithmetic import PromptArithmeticProcessor

    ids = tokenizer(["plain prompt"], return_tensors="pt")["input_ids"]
    with pytest.raises(DeliaError, match="format description"):
        PromptArithmeticProcessor(tiny_model, tokenizer, "\n\nabsent", 1.0)(ids, torch.zeros(1, 10))


# ------------------------------------------------------------------------------- token-based baselines


def test_mean_embedding_initialises_the_token_from_a_description() -> None:
    plan = plan_of("mean_embedding")
    assert plan.special_tokens == ["<sep>"] and plan.token_init == "desc_mean"
    assert plan.token_description == "a Python dictionary with the keys thought and hallucination"
    assert (plan.use_diverse, plan.diversify, plan.schedule) == (False, False, "task_only")
    given = plan_of("mean_embedding", tokens={"description": "a verdict"})
    assert given.token_description == "a verdict"


def test_random_init_plan_adds_the_token_with_random_init() -> None:
    plan = plan_of("random_init")
    assert (plan.special_tokens, plan.token_init, plan.schedule) == (["<sep>"], "random", "task_only")
    with pytest.raises(ConfigError, match=r"tokens\.add"):
        plan_of("random_init", tokens={"add": []})


def test_random_init_embedding_is_seeded(tokenizer: Any) -> None:
    tokens = pytest.importorskip("delia.train.tokens")
    from conftest import tiny_llama

    plan = plan_of("random_init")
    config = RunConfig.model_validate({"tokens": {"add": plan.special_tokens, "init": plan.token_init}})

    def new_row(seed: int, global_seed: int) -> torch.Tensor:
        model, tok = tiny_llama(len(tokenizer)), tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
        torch.manual_seed(global_seed)  # after the model is built: this is the RNG state the init sees
        (new_id,) = tokens.add_special_tokens(model, tok, config.tokens, seed=seed)
        return model.get_input_embeddings().weight[new_id].detach().clone()

    # The same seed under different global RNG states gives the same row: the init does not draw from them...
    assert torch.equal(new_row(0, global_seed=0), new_row(0, global_seed=1))
    # ...and it does depend on its own seed, so the equality above is not one constant row.
    assert not torch.equal(new_row(0, global_seed=0), new_row(1, global_seed=0))
    assert new_row(0, global_seed=0).abs().sum() > 0


# ---------------------------------------------------------------------------------------------- facts


class FakeBackend:
    name = "fake"

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.prompts: list[list[dict[str, str]]] = []

    def generate(self, prompts: list[list[dict[str, str]]], sampling: Any) -> list[str]:
        self.prompts.extend(prompts)
        return [self.replies.pop(0) for _ in prompts]


def format_of_sep_task() -> tuple[Any, str]:
    from delia.methods._common import long_description, summarize_format

    summary = summarize_format(sep_task())
    return summary, long_description(summary, "<sep>")


def test_fact_based_uses_validated_llm_facts() -> None:
    from delia.methods.fact_based import build_facts

    summary, description = format_of_sep_task()
    facts = (
        "1. The <sep> format has the keys 'thought' and 'hallucination'.\n"
        "2. Bananas are yellow fruits grown in warm countries.\n"
        "- The value of 'hallucination' is 'no' or 'yes'.\n"
    )
    questions = [
        "Question 1: Which keys does <sep> have?\nWhat keys?\nWhat is the capital of France?\n",
        "What values can 'hallucination' take?\nnot a question",
    ]
    backend = FakeBackend([facts, *questions])
    examples, note = build_facts(description, summary, "<sep>", backend, FactOptions(qa_per_fact=2), seed=0)
    assert note.startswith("facts from the LLM: 2 of 3 line(s) passed")
    assert {ex.source for ex in examples} == {"fact"} and len(examples) == 4
    assert examples[0].instruction == "Which keys does <sep> have?"
    assert examples[0].response == "The <sep> format has the keys 'thought' and 'hallucination'."
    assert not any("Bananas" in ex.response for ex in examples)
    assert examples[3].instruction == "Is it true that the value of 'hallucination' is 'no' or 'yes'?"
    assert description in backend.prompts[0][0]["content"]


def test_fact_based_falls_back_to_the_answers_structure() -> None:
    from delia.methods.fact_based import build_facts

    summary, description = format_of_sep_task()
    backend = FakeBackend(["I like turtles very much and so does my dog.\n???"])
    examples, note = build_facts(description, summary, "<sep>", backend, FactOptions(qa_per_fact=2), seed=0)
    assert "fallback" in note and "no LLM fact passed validation" in note
    answers = {ex.response for ex in examples}
    assert "In the <sep> format, the value of 'hallucination' is either 'no' or 'yes'." in answers
    assert any("single quotes" in a for a in answers)
    assert all(ex.meta["fact_origin"] == "structure" for ex in examples)
    assert len(examples) == 2 * len(answers)


class FakeContext:
    """The part of a pipeline run that the facts stage uses: config, run dir, log, a backend."""

    def __init__(self, config: RunConfig, run_dir: Path, backend: FakeBackend) -> None:
        self.config, self.dir, self.lines = config, run_dir, []
        self.fake_backend = backend

    def log(self, line: str) -> None:
        self.lines.append(line)

    def base_model(self) -> Any:
        pytest.fail("the facts stage loads no model of its own")

    def backend(self, backend_cfg: Any) -> FakeBackend:
        assert backend_cfg == self.config.sample.backend  # the LLM is sample.backend
        return self.fake_backend


def test_fact_based_plan_mixes_facts_with_the_task(tmp_path: Path) -> None:
    config = build_config({"method": "fact_based", "fact_based": {"n_facts": 3, "qa_per_fact": 1}})
    method = get_method("fact_based")
    (stage,) = method.stages(config)
    assert stage.name == "facts" and stage.upstream == ("task",)
    assert {"model", "fact_based", "sample", "seed"} <= set(stage.sections)
    write_jsonl(tmp_path / "task" / "task.jsonl", sep_task())
    out = tmp_path / "facts"
    out.mkdir()
    manifest = stage.compute(FakeContext(config, tmp_path, FakeBackend(["nothing useful"])), out)
    assert manifest["counts"] == {"facts": 3}
    plan = method.plan(config, sep_task(), {"facts": out})
    assert (plan.schedule, plan.use_diverse, plan.special_tokens) == ("task_only", False, [])
    assert len(plan.extra_task_examples) == 3 and "structure" in plan.notes[0]
    cached = json.loads((out / "facts.json").read_text())
    assert len(cached["examples"]) == 3
    again = method.plan(config, sep_task(), {"facts": out})  # pure: planning twice reads the same facts
    assert [ex.id for ex in again.extra_task_examples] == [ex.id for ex in plan.extra_task_examples]


# ------------------------------------------------------------------------------------ format summary


def test_format_summary_reads_keys_labels_and_quoting() -> None:
    from delia.methods._common import example_answer, summarize_format

    summary = summarize_format(sep_task())
    assert (summary.kind, summary.keys, summary.quoting) == ("dict", ["thought", "hallucination"], "python")
    assert summary.choices == {"hallucination": ["no", "yes"]}
    assert example_answer(summary) == "{'thought': '...', 'hallucination': 'no'}"
    text = summarize_format(translation_task(TOY_PAIRS))
    assert text.kind == "text" and text.mean_words == 2


# ----------------------------------------------------------------------- tiny pipeline run per method

SLOW_OVERRIDES: dict[str, dict[str, Any]] = {
    "random_init": {},
    "mean_embedding": {},
    "dmt": {"mix": {"ratio": 1, "two_stage_order": "task_first"}, "dmt": {"variant": "sequential"}},
    "fact_based": {"fact_based": {"n_facts": 1, "qa_per_fact": 1}},
    "icl": {"icl": {"k": 2}},
    "ctg": {"ctg": {"weight": 1.0}},
    "tell": {"mix": {"ratio": 1}},
}


def tiny_run(tmp_path: Path, method: str, data: dict[str, Any] | None = None, **overrides: Any) -> Path:
    """The embedded model on the built-in demo task (short prompts: the run takes seconds, not minutes):
    4 task examples, ratio 1, one optimizer step, 2 held-out eval examples x 16 new tokens. `data`
    replaces the task and eval sections whole."""
    from delia.core.config import build_config, deep_merge
    from delia.pipeline import run

    diverse = tmp_path / "diverse.jsonl"
    write_jsonl(diverse, diverse_examples(8))
    base = {
        "name": method,
        "method": method,
        "run_dir": str(tmp_path / "runs"),
        "task": {"builder": "demo", "builder_options": {"n": 4}},
        "eval": {
            "builder": "demo",
            "builder_options": {"split": "heldout", "n": 2},
            "keys": ["name", "city", "job"],
            "label_key": None,
            "max_new_tokens": 16,
            "bootstrap": 20,
        },
        "sample": {"data": str(diverse)},
        "mix": {"ratio": 1},
        "train": {"max_steps": 1, "batch_size": 4, "micro_batch_size": 4, "max_length": 512},
    }
    return run(build_config(deep_merge({**base, **(data or {})}, overrides)), log=lambda line: None)


def finished(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 2
    return metrics, predictions


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(SLOW_OVERRIDES))
def test_tiny_pipeline_run_completes(tmp_path: Path, method: str) -> None:
    run_dir = tiny_run(tmp_path, method, **SLOW_OVERRIDES[method])
    _, predictions = finished(run_dir)
    plan = json.loads((run_dir / "plan.json").read_text())
    trains = method not in ("icl", "ctg")
    assert plan["train"] is trains and (run_dir / "adapter").exists() is trains
    mixed = read_examples(run_dir / "mix" / "mixed.jsonl")
    if method == "tell":
        anchor = plan["notes"][0].split("'")[1]
        assert all(ex.instruction.startswith(anchor) == (ex.source == "task") for ex in mixed)
        assert all(p["prompt"][-1]["content"].startswith(anchor) for p in predictions)
    if method == "dmt":
        assert [ex.source for ex in mixed] == ["task"] * 4 + ["diverse"] * 4
    if method == "fact_based":
        assert {ex.source for ex in mixed} == {"task", "fact"} and (run_dir / "facts" / "facts.json").exists()
    if method in ("random_init", "mean_embedding"):
        assert plan["special_tokens"] == ["<sep>"]
    if method == "icl":
        assert len(predictions[0]["prompt"]) == 2 * 2 + 1  # 2 demonstrations (user, assistant) + the question
    if method == "ctg":
        assert "The <sep> format" in predictions[0]["prompt"][-1]["content"]


@pytest.mark.slow
def test_tiny_dipmt_run_completes(tmp_path: Path, shared_data: Path) -> None:
    pairs = str(shared_data / "wmt21-en-is" / "newsdev2021-via-TELL.en-is.jsonl")
    run_dir = tiny_run(
        tmp_path,
        "dipmt",
        data={
            "task": {"train": pairs, "builder": "translation", "builder_options": {"limit": 200}},
            "eval": {
                "file": pairs,
                "builder": "translation",
                "builder_options": {"offset": 900, "limit": 2},
                "metric": "translation",
                "max_new_tokens": 16,
                "bootstrap": 20,
            },
        },
    )
    metrics, predictions = finished(run_dir)
    assert any("In this context, the word" in turn["content"] for turn in predictions[0]["prompt"])
    assert "values" in metrics


# ------------------------------------------------------------ the new plans through the pipeline (fast)


def tiny_pipeline_run(model_dir: Path, tmp_path: Path, method: str, **options: Any) -> Path:
    """tiny_run on the tiny random model: seconds, no sampling or rewriting."""
    return tiny_run(
        tmp_path,
        method,
        model={"name": str(model_dir)},
        task={"builder_options": {"n": 6}},
        diversify={"enabled": False},
        lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        train={"max_length": 128},
        eval={"max_new_tokens": 4, "bootstrap": 10},
        **options,
    )


def test_pipeline_runs_dmt_diverse_only_and_a_collapsed_delia(tiny_model_dir: Path, tmp_path: Path) -> None:
    from delia.pipeline.cache import read_manifest

    dmt = tiny_pipeline_run(tiny_model_dir, tmp_path / "dmt", "dmt", dmt={"k": 0.5})
    counts = read_manifest(dmt / "mix")["counts"]
    assert counts["task_remixed"] == 3 and counts["sources"] == {"diverse": 6, "task": 9}
    sources = [ex.source for ex in read_examples(dmt / "mix" / "mixed.jsonl")]
    assert sources[:6] == ["task"] * 6 and sources[6:].count("task") == 3  # task examples in stage two
    assert "3 of 6 task examples (k = 1/2)" in json.loads((dmt / "plan.json").read_text())["notes"][0]

    alone = tiny_pipeline_run(tiny_model_dir, tmp_path / "alone", "diverse_only")
    assert read_manifest(alone / "mix")["counts"]["sources"] == {"diverse": 6}
    assert read_manifest(alone / "train")["steps"] == 1 and (alone / "predictions.jsonl").is_file()

    options = {"delia": {"diversify": False, "canonical_instruction": "most_common"}, "tokens": {"add": []}}
    collapsed = tiny_pipeline_run(tiny_model_dir, tmp_path / "collapsed", "delia", **options)
    given = read_examples(collapsed / "task" / "task.jsonl")
    mixed_task = read_examples(collapsed / "mix" / "task.jsonl")
    split = [ex.instruction.rsplit("\n\n", 1) for ex in mixed_task]
    assert len({instruction for _, instruction in split}) == 1 < len({ex.instruction for ex in given})
    assert [head for head, _ in split] == [ex.instruction.rsplit("\n\n", 1)[0] for ex in given]
