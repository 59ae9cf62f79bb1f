"""Issue 18's probe evidence: real mixed-batch gradients and their findings, the held-out task loss of a
run (Figure 3), and Table 1 rows for models whose tokenizer never had `<sep>`."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from delia.core.errors import DeliaError
from delia.core.example import Example
from delia.data import write_jsonl
from delia.probe import gradient_text, gradients, heldout, mixed, repr
from delia.probe.loading import ProbeTarget, load_model_and_tokenizer

SEP = "<sep>"
TEMPLATES = ["The format is {token}.", "Answer in {token} please."]


def _task(n: int) -> list[Example]:
    return [
        Example(
            messages=[
                {
                    "role": "user",
                    "content": f"Context {i}: is the reply made up? Answer in the {SEP} format.",
                },
                {"role": "assistant", "content": f"{{'thought': 'case {i}', 'hallucination': 'no'}}"},
            ]
        )
        for i in range(n)
    ]


def _diverse(n: int) -> list[Example]:
    """Answers of different lengths, so token shares differ from example shares."""
    return [
        Example(
            messages=[
                {"role": "user", "content": f"Write about topic {i}."},
                {"role": "assistant", "content": "Sky. " * (1 + 3 * i)},
            ],
            source="diverse",
        )
        for i in range(n)
    ]


@pytest.fixture()
def lora_model(tiny_model: Any) -> Any:
    torch.manual_seed(0)
    return gradients.attach_fresh_lora(tiny_model, r=4, alpha=8, target_modules=["q_proj", "v_proj"])


@pytest.fixture(scope="module")
def plain_adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """An adapter whose run never added <sep> (common IT's kind), saved as delia.train saves one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path_factory.mktemp("plain-adapter")
    torch.manual_seed(2)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    (path / "delia_adapter.json").write_text(json.dumps({"base_model": str(tiny_model_dir)}))
    return path


# ---------------------------------------------------------------- real mixed batches


def _hand_batch_gradient(model: Any, tokenizer: Any, examples: list[Example]) -> torch.Tensor:
    """HF's own loss over one right-padded batch of every example (labels on answer tokens only)."""
    rows = []
    for example in examples:
        prompt = tokenizer.apply_chat_template(
            example.prompt_messages, tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(
            tokenizer.apply_chat_template(example.messages, tokenize=False), add_special_tokens=False
        )
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        rows.append((ids["input_ids"], [-100] * n_prompt + ids["input_ids"][n_prompt:]))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.tensor([ids + [0] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    params = gradients.lora_parameters(model)
    loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def test_mixed_gradient_is_the_gradient_of_the_concatenated_batch(lora_model: Any, tokenizer: Any) -> None:
    examples = [*_task(2), *_diverse(3)]
    params = gradients.lora_parameters(lora_model)
    whole = _hand_batch_gradient(lora_model, tokenizer, examples)
    for micro in (1, 2, 5):  # micro-batches summed are the whole batch, as in a training step
        found = mixed.mixed_batch_gradient(lora_model, params, tokenizer, examples, 256, micro)
        assert torch.allclose(found.vector, whole, rtol=1e-4, atol=1e-7)
    assert found.task_label_tokens < found.label_tokens


def test_mixed_gradient_weighs_sources_by_tokens_not_by_the_arithmetic_share(
    lora_model: Any, tokenizer: Any
) -> None:
    task, diverse = _task(2), _diverse(3)
    params = gradients.lora_parameters(lora_model)
    found = mixed.mixed_batch_gradient(lora_model, params, tokenizer, [*task, *diverse], 256, 2)
    g_task, _ = gradients.batch_gradient(lora_model, params, gradients.encode_batch(tokenizer, task, 256))
    g_div, _ = gradients.batch_gradient(lora_model, params, gradients.encode_batch(tokenizer, diverse, 256))
    share = found.task_label_tokens / found.label_tokens
    token_weighted = share * g_task + (1 - share) * g_div
    assert torch.allclose(found.vector, token_weighted, rtol=1e-4, atol=1e-7)
    example_weighted = 0.4 * g_task + 0.6 * g_div  # the old arithmetic: w = task examples / all examples
    assert abs(share - 0.4) > 0.05
    assert float((found.vector - example_weighted).norm() / found.vector.norm()) > 1e-2


def test_mixed_batches_hold_their_task_batch_and_the_ratio_of_diverse() -> None:
    task_batches = [_task(4)[:2], _task(4)[2:]]
    diverse = _diverse(7)
    batches = mixed.build_mixed_batches(task_batches, diverse, ratio=2.5, seed=0)
    assert [(b.task_batch, b.n_task, b.n_diverse) for b in batches] == [(0, 2, 5), (1, 2, 5)]
    for batch, task in zip(batches, task_batches, strict=True):
        ids = [ex.id for ex in batch.examples]
        assert {ex.id for ex in task} <= set(ids) and len(set(ids)) == 7  # distinct within a batch
    assert [ex.source for ex in batches[0].examples] != sorted(ex.source for ex in batches[0].examples)
    windows = mixed.diverse_windows(diverse, 3, 5, seed=0)  # 15 from a pool of 7: wraps round
    assert [len(w) for w in windows] == [5, 5, 5] and len({e.id for w in windows for e in w}) == 7
    assert mixed.build_mixed_batches(task_batches, diverse, ratio=0, seed=0)[0].n_diverse == 0


def test_gradient_report_measures_mixed_batches(lora_model: Any, tokenizer: Any) -> None:
    task, diverse = _task(8), _diverse(12)
    task_batches = [task[i : i + 2] for i in range(0, 8, 2)]
    batches = [("task", b) for b in task_batches] + [("diverse", diverse[i : i + 2]) for i in range(0, 8, 2)]
    grads = gradients.compute_gradients(lora_model, tokenizer, batches, 128, progress=False)
    mixed_batches = mixed.build_mixed_batches(task_batches, diverse, ratio=1.5, seed=0)
    found = gradients.compute_mixed_gradients(lora_model, tokenizer, mixed_batches, 128, 2, progress=False)
    report = gradients.gradient_report(grads, 1.5, 1, list(zip(mixed_batches, found, strict=True)))
    section = report["mixed_batches"]
    assert section["batches"] == 4 and section["diverse_examples_per_batch"] == 3
    assert section["task_example_share"] == pytest.approx(0.4)
    assert section["arithmetic"]["task_weight"] == pytest.approx(0.4)
    own = section["measured"]["cosine_with_own_task_batch"]
    assert own["n"] == 4 and -1 <= own["min"] <= own["max"] <= 1
    assert section["measured"]["cosine_with_other_task_batches"]["n"] == 12
    fraction = report["biased_directions"]["fraction"]
    assert 0 <= fraction["mixed_measured"] <= 1 and fraction["mixed_measured"] != fraction["mixed"]
    topics = [f["topic"] for f in report["findings"]]
    assert topics == [
        "task consistency",
        "diverse cancellation",
        "buffering along biased directions",
        "arithmetic vs measured",
    ]
    labels = [row["figure"] for row in gradient_text.summary_rows(report)]
    assert "fraction along top-1 task dirs: mixed (arithmetic)" in labels
    assert "cosine mixed (measured) with its own task batch" in labels


def _report(diverse_cancellation: float, mixed_fraction: float) -> dict[str, Any]:
    return {
        "batches": {"task": 4, "diverse": 4},
        "cancellation": {
            "task": 0.9,
            "diverse": diverse_cancellation,
            "unrelated_baseline_task": 0.5,
            "unrelated_baseline_diverse": 0.5,
        },
        "biased_directions": {
            "fraction": {
                "task": 0.6,
                "diverse": 0.2,
                "mixed": 0.3,
                "mixed_measured": mixed_fraction,
                "random_baseline": 0.01,
            }
        },
    }


def test_findings_follow_the_numbers() -> None:
    against = {f["topic"]: f for f in gradient_text.findings(_report(0.51, 0.7))}
    assert against["diverse cancellation"]["verdict"] == gradient_text.AGAINST
    assert "cancel less than" in against["diverse cancellation"]["text"]
    assert "0.510 vs 0.500" in against["diverse cancellation"]["text"]
    assert against["buffering along biased directions"]["verdict"] == gradient_text.AGAINST
    assert against["task consistency"]["verdict"] == gradient_text.SUPPORTS
    supports = {f["topic"]: f for f in gradient_text.findings(_report(0.3, 0.4))}
    assert supports["diverse cancellation"]["verdict"] == gradient_text.SUPPORTS
    assert "at least as much as" in supports["diverse cancellation"]["text"]
    assert supports["buffering along biased directions"]["verdict"] == gradient_text.SUPPORTS
    markdown = gradient_text.findings_markdown(list(against.values()))
    assert "## Findings" in markdown and "**against the paper**" in markdown


def test_run_gradient_probe_writes_mixed_figures_and_findings(tiny_model_dir: Path, tmp_path: Path) -> None:
    examples = [*_task(4), *_diverse(8)]
    target = ProbeTarget("base", str(tiny_model_dir), None)
    fresh = gradients.FreshLora(r=4, alpha=8, target_modules=("q_proj", "v_proj"))
    result = gradients.run_gradient_probe(target, examples, tmp_path, 2, 2, 128, None, 1, fresh)
    report = json.loads((tmp_path / "gradients.json").read_text())
    assert report["mixed_batches"]["diverse_examples_per_batch"] == 4  # the file's ratio 2 x batch size 2
    text = (tmp_path / "gradients.md").read_text()
    assert "## Findings" in text and all(f["text"] in text for f in result["findings"])
    off = gradients.run_gradient_probe(
        target, examples, tmp_path / "off", 2, 2, 128, None, 1, fresh, mixed=False
    )
    assert "mixed_batches" not in off["report"]


# ---------------------------------------------------------------- held-out task loss (Figure 3)


def test_heldout_task_loss_is_the_pooled_answer_token_loss(tiny_model: Any, tokenizer: Any) -> None:
    examples = [*_task(2), *_diverse(2)]
    bare = Example(messages=[{"role": "user", "content": "No reference here."}])
    figures = heldout.heldout_loss_figures(
        tiny_model, tokenizer, [*examples, bare], heldout.LossSettings(batch_size=3)
    )
    total, count = 0.0, 0
    for example in examples:
        prompt = tokenizer.apply_chat_template(
            example.prompt_messages, tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(
            tokenizer.apply_chat_template(example.messages, tokenize=False), add_special_tokens=False
        )
        ids = ids["input_ids"]
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            labels = torch.tensor([[-100] * n_prompt + ids[n_prompt:]])
            mean = tiny_model(input_ids=torch.tensor([ids]), labels=labels).loss
        total += float(mean) * (len(ids) - n_prompt)
        count += len(ids) - n_prompt
    assert figures["loss"] == pytest.approx(total / count, rel=1e-4)
    assert (figures["examples"], figures["with_reference"], figures["used"]) == (5, 4, 4)
    assert figures["label_tokens"] == count
    assert heldout.heldout_task_loss(tiny_model, tokenizer, examples, batch_size=1) == pytest.approx(
        figures["loss"], rel=1e-5
    )
    with pytest.raises(DeliaError, match="no held-out task loss"):
        heldout.heldout_task_loss(tiny_model, tokenizer, [bare])


def test_heldout_batches_group_examples_of_similar_length(
    tiny_model: Any, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Padding to the longest of a batch is wasted work: batches are cut from the length-sorted examples."""
    batches: list[list[int]] = []
    real_pad = heldout.pad

    def spy(items: Any, *args: Any) -> Any:
        batches.append([len(item.input_ids) for item in items])
        return real_pad(items, *args)

    monkeypatch.setattr(heldout, "pad", spy)
    examples = [*_task(3), *_diverse(3)]
    heldout.heldout_loss_figures(tiny_model, tokenizer, examples, heldout.LossSettings(batch_size=2))
    flat = [length for batch in batches for length in batch]
    assert len(flat) == 6 and flat == sorted(flat) and len(set(flat)) > 1


def test_run_heldout_task_loss_reads_the_run(plain_adapter_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "task").mkdir(parents=True)
    (run / "train").mkdir()
    (run / "adapter").symlink_to(plain_adapter_dir)
    write_jsonl(run / "task" / "eval.jsonl", _task(3))
    (run / "train" / "config.yaml").write_text("train:\n  max_length: 300\n")
    (run / "plan.json").write_text('{"use_diverse": true, "ratio": 10}')
    result = heldout.run_heldout_task_loss(run, limit=2)
    assert result["ratio"] == 10 and result["max_length"] == 300 and result["used"] == 2
    base = json.loads((plain_adapter_dir / "delia_adapter.json").read_text())["base_model"]
    model, tokenizer = load_model_and_tokenizer(base, plain_adapter_dir)
    assert result["loss"] == pytest.approx(heldout.heldout_task_loss(model, tokenizer, _task(2)), rel=1e-5)


# ---------------------------------------------------------------- Table 1: a token added for the probe


def _with_token_added(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    """The model really given <sep>, embedded as the mean of its plain-text pieces' rows."""
    model, tokenizer = copy.deepcopy(model), copy.deepcopy(tokenizer)
    pieces = tokenizer(SEP, add_special_tokens=False)["input_ids"]
    tokenizer.add_special_tokens({"additional_special_tokens": [SEP]})
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        weight[tokenizer.convert_tokens_to_ids(SEP)] = weight[pieces].mean(0)
    return model, tokenizer


def test_added_token_equals_really_adding_it_with_the_pieces_mean(tiny_model: Any, tokenizer: Any) -> None:
    vocab_before = len(tokenizer)
    added = repr.repr_distances(tiny_model, tokenizer, "base", SEP, ["json"], TEMPLATES, missing_token="add")
    assert len(tokenizer) == vocab_before and SEP not in tokenizer.get_vocab()  # the caller's is untouched
    assert added["applicable"] and added["token_row"] == "added_for_probe"
    pieces = tokenizer(SEP, add_special_tokens=False)["input_ids"]
    assert (
        added["token_init"]
        == {
            "kind": "mean_of_pieces",
            "pieces": tokenizer.convert_ids_to_tokens(pieces),
            "piece_ids": pieces,
        }
        and len(pieces) > 1
    )
    real = repr.repr_distances(*_with_token_added(tiny_model, tokenizer), "real", SEP, ["json"], TEMPLATES)
    assert real["token_row"] == "model"
    assert added["keywords"]["json"]["l2_mean"] == pytest.approx(
        real["keywords"]["json"]["l2_mean"], rel=1e-4
    )


def test_repr_probe_adds_the_token_for_runs_that_never_had_it(
    plain_adapter_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    targets = [
        ProbeTarget("base", str(tiny_model_dir), None),
        ProbeTarget("common_it", str(tiny_model_dir), plain_adapter_dir),
    ]
    result = repr.run_repr_probe(targets, tmp_path, SEP, ["json"], TEMPLATES, missing_token="add")
    assert [row["run"] for row in result["table"]] == ["base", "common_it"]
    assert all(row["token_row"].startswith("added for the probe: mean of") for row in result["table"])
    assert all(isinstance(row["json@last"], float) for row in result["table"])
    data = json.loads((tmp_path / "repr.json").read_text())
    assert (
        data["settings"]["missing_token"] == "add"
        and data["settings"]["added_token_init"] == "mean_of_pieces"
    )
    assert "token_row" in (tmp_path / "repr_table.csv").read_text().splitlines()[0]
    # The adapter changes the states: its row differs from the base model's.
    assert result["table"][0]["json@last"] != pytest.approx(result["table"][1]["json@last"])
    skipped = repr.run_repr_probe(targets[:1], tmp_path / "skip", SEP, ["json"], TEMPLATES)
    assert skipped["table"] == [
        {"run": "base", "json@first": "n/a", "json@middle": "n/a", "json@last": "n/a"}
    ]
    with pytest.raises(DeliaError, match="missing_token"):
        repr.run_repr_probe(targets, tmp_path, SEP, ["json"], TEMPLATES, missing_token="guess")
