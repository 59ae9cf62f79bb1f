"""Task builders: valid Examples, `<sep>` named in every instruction, disjoint demo splits, option errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from delia.core.errors import ConfigError, DataError
from delia.data.builders import build
from delia.data.builders._common import instructions_from_file, last_paragraph
from delia.data.builders.halueval import HALUEVAL_INSTRUCTIONS, halueval_record


def write_lines(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def halueval_file(tmp_path: Path) -> Path:
    rows = [
        {
            "ID": str(i),
            "user_query": f"Name a colour {i}.",
            "chatgpt_response": f"Blue {i}.",
            "hallucination": "yes" if i % 3 == 0 else "no",
            "hallucination_spans": ["Blue"] if i % 3 == 0 else [],
        }
        for i in range(6)
    ]
    return write_lines(tmp_path / "general.json", rows)


def test_halueval_examples_name_sep_and_carry_the_label(halueval_file: Path) -> None:
    examples = build("halueval", str(halueval_file), {})
    assert len(examples) == 6
    for example in examples:
        user = example.messages[0]["content"]
        assert user.startswith("\n'relatives' : \n'user_query' : Name a colour")
        assert "\n'chatgpt_response' : Blue" in user
        instruction = last_paragraph(user)
        assert "<sep>" in instruction and instruction in HALUEVAL_INSTRUCTIONS
        answer = json.loads(example.response)
        assert set(answer) == {"thought", "hallucination"}
        assert answer["hallucination"] == example.meta["label"]
        assert answer["thought"]
    assert [e.meta["label"] for e in examples].count("yes") == 2


def test_halueval_python_quotes_match_the_reproduce_style(halueval_file: Path) -> None:
    import ast

    example = build("halueval", str(halueval_file), {"quote_style": "python", "limit": 1})[0]
    assert example.response.startswith("{'thought': ")
    assert ast.literal_eval(example.response)["hallucination"] == "yes"


def test_halueval_reads_halu_cot_prompts_and_reuses_a_files_instructions(tmp_path: Path) -> None:
    prompt = (
        "Role and Goal: ...\n\nConsider the following task:\n'relatives' : \n'user_query' : Q one\ntwo\n"
        "'chatgpt_response' : R one"
    )
    source = write_lines(tmp_path / "cot.jsonl", [{"prompt": prompt, "response": "yes"}])
    task = write_lines(
        tmp_path / "task.jsonl",
        [
            {
                "messages": [
                    {
                        "role": "user",
                        "content": "\n'relatives' : \n'user_query' : x\n'chatgpt_response' : y"
                        "\n\n\nJudge it in the <sep> format.",
                    },
                    {"role": "assistant", "content": "{'thought': 'z', 'hallucination': 'no'}"},
                ]
            },
        ],
    )
    assert instructions_from_file(str(task)) == ["Judge it in the <sep> format."]
    example = build("halueval", str(source), {"instructions_from": str(task)}, "eval")[0]
    assert example.instruction.endswith("\n\n\nJudge it in the <sep> format.")
    assert "'user_query' : Q one\ntwo\n'chatgpt_response' : R one" in example.instruction
    assert json.loads(example.response)["hallucination"] == "yes"


def test_halueval_excludes_queries_seen_in_training(tmp_path: Path, halueval_file: Path) -> None:
    train = write_lines(
        tmp_path / "train.json",
        [
            {"user_query": "Name a colour 0.", "chatgpt_response": "x", "hallucination": "no"},
        ],
    )
    examples = build("halueval", str(halueval_file), {"exclude_queries_from": str(train)})
    assert len(examples) == 5
    assert all("Name a colour 0." not in e.instruction for e in examples)


def test_halueval_rejects_a_bad_label_with_its_line(tmp_path: Path) -> None:
    bad = write_lines(
        tmp_path / "bad.jsonl",
        [
            {"user_query": "q", "chatgpt_response": "r", "hallucination": "no"},
            {"user_query": "q2", "chatgpt_response": "r", "hallucination": "maybe"},
        ],
    )
    with pytest.raises(DataError, match=r"bad.jsonl:2: .*yes or no"):
        build("halueval", str(bad), {})


def test_halueval_record_parses_every_shared_source(shared_data: Path) -> None:
    for path in (
        "halueval/general_data.json",
        "halu-cot-json/dev500_Halu_CoT_JSON.jsonl",
        "delia-reproduce/train_dataset.jsonl",
    ):
        first = json.loads((shared_data / path).read_text(encoding="utf-8").split("\n", 1)[0])
        row = halueval_record(first)
        assert row is not None and row["user_query"] and row["chatgpt_response"], path


def test_reproduce_instructions_are_the_sixty_sep_phrasings(shared_data: Path) -> None:
    instructions = instructions_from_file(str(shared_data / "delia-reproduce/train_dataset.jsonl"))
    assert len(instructions) == 60
    assert all("<sep>" in i for i in instructions)


def test_translation_direction_window_and_sep_variant(tmp_path: Path) -> None:
    pairs = [{"en": f"Hello {i}.", "is": f"Halló {i}.", "direction": "en-is"} for i in range(10)]
    path = write_lines(tmp_path / "pairs.jsonl", pairs)
    plain = build("translation", str(path), {"direction": "is-en", "offset": 2, "limit": 3})
    assert [e.response for e in plain] == ["Hello 2.", "Hello 3.", "Hello 4."]
    assert plain[0].instruction.startswith("Halló 2.\n\n") and "English" in plain[0].instruction
    assert "<sep>" not in plain[0].instruction
    assert plain[0].meta["source_text"] == "Halló 2."
    with_token = build("translation", str(path), {"sep": True, "limit": 2})
    assert all(last_paragraph(e.instruction).endswith("<sep> format.") for e in with_token)
    assert with_token[0].response == "Halló 0."


def test_demo_splits_share_no_values_and_no_phrasings() -> None:
    train = build("demo", None, {"split": "train", "n": 60})
    heldout = build("demo", None, {"split": "heldout", "n": 30})
    assert len(train) == 60 and len(heldout) == 30
    for split in (train, heldout):
        for example in split:
            answer = json.loads(example.response)
            assert answer == example.meta["fields"]
            assert all(value in example.meta["sentence"] for value in answer.values())
            assert "<sep>" in last_paragraph(example.instruction)
    for key in ("city", "job"):
        assert not {e.meta["fields"][key] for e in train} & {e.meta["fields"][key] for e in heldout}
    assert not {e.meta["instruction"] for e in train} & {e.meta["instruction"] for e in heldout}


def test_demo_is_deterministic_and_offset_gives_fresh_examples() -> None:
    first = build("demo", None, {"n": 10})
    assert [e.id for e in first] == [e.id for e in build("demo", None, {"n": 10})]
    later = build("demo", None, {"n": 10, "offset": 10})
    assert not {e.id for e in first} & {e.id for e in later}


def test_unknown_builder_and_option_name_their_field() -> None:
    with pytest.raises(ConfigError, match=r"task\.builder"):
        build("nope", None, {})
    with pytest.raises(ConfigError, match=r"eval\.builder_options\.sizee"):
        build("demo", None, {"sizee": 3}, "eval")
    with pytest.raises(ConfigError, match="needs a file"):
        build("translation", None, {})


def halueval_rows(n: int) -> list[dict]:
    return [
        {"user_query": f"Q{i}?", "chatgpt_response": f"R{i}.", "hallucination": "yes" if i % 2 else "no"}
        for i in range(n)
    ]


def test_halueval_holds_phrasings_out_of_the_task_and_evaluates_with_them(tmp_path: Path) -> None:
    path = str(write_lines(tmp_path / "general.jsonl", halueval_rows(40)))
    split = {"instruction_set": "all", "holdout_instructions": 6, "seed": 3}
    task = build("halueval", path, split)
    unseen = build("halueval", path, {**split, "phrasing": "unseen"}, "eval")
    trained = {e.meta["instruction"] for e in task}
    held = {e.meta["instruction"] for e in unseen}
    assert {e.meta["phrasing"] for e in task} == {"seen"} and {e.meta["phrasing"] for e in unseen} == {
        "unseen"
    }
    assert not trained & held and held <= set(HALUEVAL_INSTRUCTIONS)
    assert len(trained) > 6 and 1 < len(held) <= 6
    # The held-out phrasings follow the seed, and the same options give the same ones in every build.
    other = build("halueval", path, {**split, "seed": 4, "phrasing": "unseen"})
    assert {e.meta["instruction"] for e in other} != held
    assert [e.id for e in build("halueval", path, split)] == [e.id for e in task]
    # Without a split the examples are exactly as before and record no phrasing group.
    plain = build("halueval", path, {"instruction_set": "all", "seed": 3})
    assert all("phrasing" not in e.meta for e in plain)
    assert [e.messages for e in build("halueval", path, {**split, "holdout_instructions": 0})] == [
        e.messages for e in plain
    ]


def test_halueval_both_pairs_every_context_with_a_seen_and_an_unseen_phrasing(tmp_path: Path) -> None:
    path = str(write_lines(tmp_path / "general.jsonl", halueval_rows(5)))
    new = ["Is anything made up above? Reply in <sep>.", "Spot invented facts; answer with <sep>."]
    options = {"instructions": HALUEVAL_INSTRUCTIONS[:4], "eval_instructions": new, "phrasing": "both"}
    examples = build("halueval", path, {**options, "limit": 3}, "eval")
    assert [e.meta["phrasing"] for e in examples] == ["seen", "unseen"] * 3
    for seen, unseen in zip(examples[::2], examples[1::2], strict=True):
        assert seen.instruction.rsplit("\n\n\n", 1)[0] == unseen.instruction.rsplit("\n\n\n", 1)[0]
        assert seen.response == unseen.response and seen.id != unseen.id
        assert seen.meta["instruction"] in HALUEVAL_INSTRUCTIONS[:4] and unseen.meta["instruction"] in new
    listed = tmp_path / "new.txt"
    listed.write_text("\n".join(new) + "\n\n", encoding="utf-8")
    from_file = build("halueval", path, {**options, "eval_instructions": str(listed), "limit": 3})
    assert [e.messages for e in from_file] == [e.messages for e in examples]


def test_halueval_phrasing_options_name_their_field(tmp_path: Path) -> None:
    path = str(write_lines(tmp_path / "general.jsonl", halueval_rows(3)))
    with pytest.raises(ConfigError, match=r"eval\.builder_options\.phrasing.*holdout_instructions"):
        build("halueval", path, {"phrasing": "unseen"}, "eval")
    with pytest.raises(ConfigError, match=r"task\.builder_options\.holdout_instructions.*16 of 16"):
        build("halueval", path, {"holdout_instructions": 16})
    with pytest.raises(ConfigError, match=r"builder_options\.eval_instructions.*training phrasing"):
        build("halueval", path, {"eval_instructions": [HALUEVAL_INSTRUCTIONS[0]]})
    with pytest.raises(ConfigError, match=r"builder_options\.holdout_instructions"):
        build("halueval", path, {"holdout_instructions": -1})
    with pytest.raises(DataError, match="does not exist"):
        build("halueval", path, {"eval_instructions": str(tmp_path / "none.txt")})


def reproduce_record(i: int, instruction: str) -> dict:
    user = f"\n'relatives' : \n'user_query' : q{i}\n'chatgpt_response' : r{i}\n\n\n{instruction}"
    answer = f"{{'thought': 'own thought {i}', 'hallucination': '{'yes' if i % 2 else 'no'}'}}"
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def test_halueval_keep_own_rebuilds_a_reproduce_file_and_rephrases_held_out_records(tmp_path: Path) -> None:
    from delia.data import read_examples

    phrasings = [f"Judge it, style {j}, in the <sep> format." for j in range(6)]
    path = write_lines(tmp_path / "train.jsonl", [reproduce_record(i, phrasings[i % 6]) for i in range(12)])
    original = read_examples(path)
    rebuilt = build("halueval", str(path), {"keep_own": True})
    assert [e.messages for e in rebuilt] == [e.messages for e in original]
    assert [e.meta["label"] for e in rebuilt] == ["no", "yes"] * 6
    held = build("halueval", str(path), {"keep_own": True, "holdout_instructions": 2})
    assert [e.response for e in held] == [e.response for e in original]  # own answers kept
    kept = {e.meta["instruction"] for e in held}
    assert len(kept) == 4 and {e.meta["phrasing"] for e in held} == {"seen"}
    changed = [h for h, o in zip(held, original, strict=True) if h.messages != o.messages]
    assert len(changed) == 4  # the records whose own phrasing is held out (2 of 6 phrasings, 2 records each)
    # The eval build of other contexts names the task file and holds out the same two phrasings.
    unseen = build(
        "halueval",
        str(write_lines(tmp_path / "eval.jsonl", halueval_rows(8))),
        {"instructions_from": str(path), "holdout_instructions": 2, "phrasing": "unseen"},
        "eval",
    )
    assert {e.meta["instruction"] for e in unseen} == set(phrasings) - kept


def test_keep_own_rebuilds_the_official_sep_set(shared_data: Path) -> None:
    from delia.data import read_examples

    path = shared_data / "delia-reproduce/train_dataset.jsonl"
    rebuilt = build("halueval", str(path), {"keep_own": True})
    assert [e.id for e in rebuilt] == [e.id for e in read_examples(path)]
