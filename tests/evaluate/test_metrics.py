"""json_format (the paper's metric), exact match and translation metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from delia.core.config import EvalConfig
from delia.core.errors import DeliaError
from delia.evaluate import score
from delia.evaluate.jsonfmt import earliest_object, normalise_label, parse_answer, reference_label

KEYS_CFG = EvalConfig(keys=["thought", "hallucination"], label_key="hallucination", bootstrap=200)

ISSUE_ROWS = [
    "{'thought': 'the user\\'s query is answered', 'hallucination': 'yes'}",
    'Here is my analysis. {"thought": "x", "hallucination": "no"}',
    '{"thought": "x"}',
    "The response contains no hallucination.",
]


def test_issue_check_half_correct_and_first_label_kept() -> None:
    result = score("json_format", ISSUE_ROWS, None, KEYS_CFG)
    assert result["values"]["json_format"]["value"] == 0.5
    assert result["values"]["json_format"]["n"] == 4
    assert [r["json_format"] for r in result["per_example"]] == [1, 1, 0, 0]
    assert result["per_example"][0]["label"] == "yes"
    assert result["per_example"][2]["missing_keys"] == ["hallucination"]
    assert "label_accuracy" not in result["values"]  # no references, nothing to compare with


def test_earliest_object_nested_braces() -> None:
    text = 'ok {"thought": {"a": {"b": 1}}, "hallucination": "no"} tail'
    assert earliest_object(text) == '{"thought": {"a": {"b": 1}}, "hallucination": "no"}'
    parsed, how = parse_answer(text)
    assert parsed == {"thought": {"a": {"b": 1}}, "hallucination": "no"}
    assert how == "json"


def test_braces_inside_strings_do_not_count() -> None:
    text = '{"thought": "use } and { freely", "hallucination": "no"} and a stray } after'
    assert earliest_object(text) == '{"thought": "use } and { freely", "hallucination": "no"}'
    single = "{'thought': 'a } inside', 'hallucination': 'yes'}"
    assert parse_answer(single)[0] == {"thought": "a } inside", "hallucination": "yes"}


def test_earliest_pair_is_chosen_even_when_a_later_one_would_pass() -> None:
    text = 'first {"a": 1} then {"thought": "x", "hallucination": "no"}'
    assert earliest_object(text) == '{"a": 1}'
    result = score("json_format", [text], None, KEYS_CFG)
    assert result["per_example"][0]["json_format"] == 0
    two = '{"thought": "x", "hallucination": "yes"} {"thought": "y", "hallucination": "no"}'
    assert score("json_format", [two], None, KEYS_CFG)["per_example"][0]["label"] == "yes"


def test_quote_repair_accepts_apostrophes_and_inner_quotes() -> None:
    apostrophe = "{'thought': 'the user's request is met', 'hallucination': 'no'}"
    assert parse_answer(apostrophe) == (
        {"thought": "the user's request is met", "hallucination": "no"},
        "repaired",
    )
    inner = '{"thought": "he said "hi" to me", "hallucination": "yes"}'
    assert parse_answer(inner) == ({"thought": 'he said "hi" to me', "hallucination": "yes"}, "repaired")


def test_quote_repair_does_not_invent_structure() -> None:
    # json_repair-style leniency (unquoted words, missing commas) is not the paper's metric.
    assert parse_answer("{thought: x, hallucination: no}") == (None, None)
    assert parse_answer('{"thought": "x" "hallucination": "no"}') == (None, None)


def test_truncated_answers_are_flagged_separately() -> None:
    predictions = ["{'thought': \"the response is cut", "{'thought': 'short'}", "{'thought': 'also cut"]
    result = score("json_format", predictions, None, KEYS_CFG, hit_limit=[True, True, False])
    rows = result["per_example"]
    assert [r["unclosed"] for r in rows] == [True, False, True]
    assert [r["truncated"] for r in rows] == [True, False, False]
    assert result["values"]["truncated"]["value"] == pytest.approx(1 / 3)
    assert result["values"]["unclosed"]["value"] == pytest.approx(2 / 3)
    assert "truncated" not in score("json_format", predictions, None, KEYS_CFG)["values"]


def test_strict_rate_needs_the_whole_answer_to_be_json() -> None:
    predictions = [
        '{"thought": "x", "hallucination": "no"}',
        ' {"thought": "x", "hallucination": "no"}\n',
        "{'thought': 'x', 'hallucination': 'no'}",
        'Sure: {"thought": "x", "hallucination": "no"}',
    ]
    result = score("json_format", predictions, None, KEYS_CFG)
    assert [r["strict_json"] for r in result["per_example"]] == [1, 1, 0, 0]
    assert result["values"]["strict_json"]["value"] == 0.5
    assert result["values"]["json_format"]["value"] == 1.0


def test_label_accuracy_against_dict_and_bare_references() -> None:
    predictions = [
        "{'thought': 'a', 'hallucination': 'Yes.'}",  # bare reference "yes": correct after normalising
        '{"thought": "a", "hallucination": "no"}',  # dict reference with yes: wrong
        "no braces at all",  # a reference label but no parsed answer: wrong
        '{"thought": "a", "hallucination": "no"}',  # no reference: not counted
    ]
    references = ["yes", "{'thought': 'gold', 'hallucination': 'yes'}", "no", None]
    result = score("json_format", predictions, references, KEYS_CFG)
    rows = result["per_example"]
    assert [r.get("label_correct") for r in rows] == [1, 0, 0, None]
    assert result["values"]["label_accuracy"]["value"] == pytest.approx(1 / 3)
    assert result["values"]["label_accuracy"]["n"] == 3
    assert rows[0]["label"] == "Yes."  # the stored label is the prediction's own, never rewritten
    assert rows[1]["reference_label"] == "yes"


def test_label_helpers() -> None:
    assert normalise_label(" YES ") == "yes"
    assert normalise_label(True) == "yes"
    assert normalise_label("no.") == "no"
    assert reference_label("no", "hallucination") == "no"
    assert reference_label('{"hallucination": "yes"}', "hallucination") == "yes"
    assert reference_label("{'thought': 'x'}", "hallucination") is None
    assert reference_label("", "hallucination") is None


def test_exact_match_normalises_case_space_and_end_punctuation() -> None:
    result = score(
        "exact", ["Paris.", "  the   Moon", "Mars"], ["paris", "The moon", "Venus"], EvalConfig(bootstrap=50)
    )
    assert [r["exact"] for r in result["per_example"]] == [1, 1, 0]
    assert result["values"]["exact"]["value"] == pytest.approx(2 / 3)


def test_translation_matches_sacrebleu_and_has_signatures() -> None:
    import sacrebleu

    hyps = ["The cat sat on the mat.", "A quick brown fox jumps.", "It is raining today.", "Hello world"]
    refs = [
        "The cat is sitting on the mat.",
        "The quick brown fox jumps.",
        "Today it is raining.",
        "Hello, world!",
    ]
    result = score("translation", hyps, refs, EvalConfig(bootstrap=200))
    values = result["values"]
    assert values["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert values["chrf++"]["value"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score)
    for name in ("bleu", "chrf++"):
        assert values[name]["n"] == 4
        assert values[name]["ci_low"] <= values[name]["value"] <= values[name]["ci_high"]
    signatures = result["details"]["signatures"]
    assert "tok:13a" in signatures["bleu"] and "version:" in signatures["bleu"]
    assert "nw:2" in signatures["chrf++"]
    sentence = sacrebleu.sentence_chrf(hyps[0], [refs[0]], word_order=2).score
    assert result["per_example"][0]["chrf++"] == pytest.approx(sentence)


def test_translation_on_real_pairs(shared_data: Path) -> None:
    import sacrebleu

    path = shared_data / "wmt21-en-is" / "newsdev2021-via-TELL.is-en.jsonl"
    if not path.exists():
        pytest.skip(f"{path} missing")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:40]]
    refs = [str(r["en"]) for r in rows]
    hyps = [" ".join(ref.split()[: max(1, len(ref.split()) // 2)]) for ref in refs]  # half-sentence answers
    result = score("translation", hyps, refs, EvalConfig(bootstrap=100))
    assert result["values"]["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert 0 < result["values"]["bleu"]["value"] < 100


def test_learned_metrics_need_local_checkpoints(tmp_path: Path) -> None:
    cfg = EvalConfig(bootstrap=10, bleurt_checkpoint=str(tmp_path / "missing-bleurt"))
    with pytest.raises(DeliaError, match=r"BLEURT checkpoint .* does not exist"):
        score("translation", ["a b"], ["a b"], cfg)
    cfg = EvalConfig(bootstrap=10, comet_checkpoint=str(tmp_path / "missing.ckpt"))
    with pytest.raises(DeliaError, match="COMET checkpoint"):
        score("translation", ["a b"], ["a b"], cfg, sources=["x"])


def test_score_rejects_bad_input() -> None:
    with pytest.raises(DeliaError, match="unknown metric"):
        score("rouge", ["a"], ["a"])
    with pytest.raises(DeliaError, match="needs a reference"):
        score("translation", ["a"], None)
    with pytest.raises(DeliaError, match="2 predictions but 1 references"):
        score("json_format", ["a", "b"], ["a"])
    with pytest.raises(DeliaError, match="no predictions"):
        score("exact", [], [])


def test_real_training_answers_all_count_as_correct(shared_data: Path) -> None:
    from delia.data import read_examples

    examples = read_examples(shared_data / "delia-reproduce" / "train_dataset.jsonl")
    answers = [ex.response for ex in examples]
    result = score("json_format", answers, answers, KEYS_CFG)
    assert result["n"] == 100
    assert result["values"]["json_format"]["value"] == 1.0
    assert result["values"]["strict_json"]["value"] == 0.0  # Python-dict style: json.loads rejects every one
    assert result["values"]["label_accuracy"]["value"] == 1.0
    assert result["details"]["predicted_labels"] == {"no": 85, "yes": 15}


def test_bare_label_references_from_halu_cot_json(shared_data: Path) -> None:
    from delia.data import read_examples

    examples = read_examples(shared_data / "halu-cot-json" / "dev500_Halu_CoT_JSON.jsonl")[:60]
    references = [ex.response for ex in examples]
    assert set(references) <= {"yes", "no"}
    flipped = {"yes": "no", "no": "yes"}
    right = [f"{{'thought': 't', 'hallucination': '{r}'}}" for r in references]
    wrong = [f'{{"thought": "t", "hallucination": "{flipped[r]}"}}' for r in references]
    assert score("json_format", right, references, KEYS_CFG)["values"]["label_accuracy"]["value"] == 1.0
    assert score("json_format", wrong, references, KEYS_CFG)["values"]["label_accuracy"]["value"] == 0.0


@given(st.text(alphabet=st.sampled_from(list("{}'\"\\ab :,")), max_size=60))
def test_earliest_object_never_raises_and_returns_a_braced_substring(text: str) -> None:
    found = earliest_object(text)
    if found is not None:
        assert found.startswith("{") and found.endswith("}")
        assert found in text
    parse_answer(text)  # never raises either


@given(st.text(max_size=80))
def test_parse_answer_never_raises_on_any_text(text: str) -> None:
    parsed, how = parse_answer(text)
    assert (parsed is None) == (how is None)


@given(
    st.dictionaries(st.sampled_from(["thought", "hallucination", "x"]), st.text(max_size=20), min_size=1),
    st.sampled_from(["json", "python"]),
)
def test_serialised_dicts_round_trip(value: dict[str, str], style: str) -> None:
    text = json.dumps(value, ensure_ascii=False) if style == "json" else repr(value)
    assert parse_answer(f"Answer: {text} done")[0] == value


@given(st.lists(st.from_regex(r"[ab{]+('[ab]+)?", fullmatch=True), min_size=1, max_size=6))
def test_single_quoted_values_with_apostrophes_are_repaired(words: list[str]) -> None:
    body = " ".join(words)  # apostrophes inside words, as in "user's": ambiguous spots like "a' 'b" are not
    text = f"{{'thought': '{body}', 'hallucination': 'no'}}"
    assert parse_answer(text)[0] == {"thought": body, "hallucination": "no"}


def test_degenerate_answers_are_judged_quickly() -> None:
    """Small models do loop on one character; the extractor is one pass, not one pass per brace."""
    import time

    start = time.perf_counter()
    for text in [
        "{" * 20000,
        "{'a" * 10000,
        "{" * 3000 + "}" * 3000,
        '{"a": ' + "[" * 20000 + "]" * 20000 + "}",
    ]:
        assert parse_answer(text) == (None, None)
    assert time.perf_counter() - start < 10


def test_score_by_group_scores_each_group_apart() -> None:
    from delia.evaluate.metrics import score_by_group

    refs = ["{'thought': 'a', 'hallucination': 'yes'}", None, None, None]
    groups = ["seen", "unseen", "seen", None]
    hit = [False, True, False, False]
    by_group = score_by_group("json_format", ISSUE_ROWS, refs, groups, KEYS_CFG, hit_limit=hit)
    assert list(by_group) == ["seen", "unseen"]  # the ungrouped fourth answer is in neither
    seen, unseen = by_group["seen"], by_group["unseen"]
    assert seen["n"] == 2 and seen["values"]["json_format"]["value"] == 0.5
    assert seen["values"]["label_accuracy"] == {**seen["values"]["label_accuracy"], "value": 1.0, "n": 1}
    assert unseen["n"] == 1 and unseen["values"]["json_format"]["value"] == 1.0
    assert unseen["values"]["truncated"]["value"] == 0.0  # hit the limit but closed its brace
    assert score_by_group("json_format", ISSUE_ROWS, refs, [None] * 4, KEYS_CFG) == {}


def test_max_new_tokens_takes_auto_or_a_positive_whole_number() -> None:
    from delia.core.config import load_config
    from delia.core.errors import ConfigError

    assert load_config(None, ["eval.max_new_tokens=auto"]).eval.max_new_tokens == "auto"
    assert load_config(None, ["eval.max_new_tokens=120"]).eval.max_new_tokens == 120
    assert EvalConfig().max_new_tokens == 256  # the default stays a number: stage hashes keep
    for bad in ("0", "autox", "1.5", "true"):
        with pytest.raises(ConfigError, match=r"eval\.max_new_tokens .*whole number >= 1 or 'auto'"):
            load_config(None, [f"eval.max_new_tokens={bad}"])
