"""Probes on the tiny model: hand-checked L2 and state-space figures, gradient report, loss curves, CLI."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from typer.testing import CliRunner

from delia.core.errors import DeliaError
from delia.core.example import Example
from delia.data import write_jsonl
from delia.probe import divergent, gradients, losscurve, plots, repr
from delia.probe.loading import load_model_and_tokenizer, probe_targets

SEP = "<sep>"


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A LoRA adapter on the tiny model with a trained-looking <sep> row, saved as delia.train saves one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tmp_path_factory.mktemp("adapter")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": [SEP]})
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    sep_id = tokenizer.convert_tokens_to_ids(SEP)
    torch.manual_seed(1)
    config = LoraConfig(
        r=4,
        target_modules=["q_proj", "v_proj"],
        trainable_token_indices={"embed_tokens": [sep_id]},
        init_lora_weights=False,  # non-zero B, so the adapter changes the hidden states
    )
    get_peft_model(model, config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "delia_adapter.json").write_text(json.dumps({"base_model": str(tiny_model_dir)}))
    return path


@pytest.fixture(scope="module")
def adapted(adapter_dir: Path, tiny_model_dir: Path) -> tuple[Any, Any]:
    return load_model_and_tokenizer(str(tiny_model_dir), adapter_dir)


def _examples(n: int, source: str = "task") -> list[Example]:
    return [
        Example(
            messages=[
                {
                    "role": "user",
                    "content": f"Context {i}: is the reply made up? Answer in the {SEP} format.",
                },
                {"role": "assistant", "content": f"{{'thought': 'case {i}', 'hallucination': 'no'}}"},
            ],
            source=source,
        )
        for i in range(n)
    ]


# ---------------------------------------------------------------- repr


def _hidden(model: Any, tokenizer: Any, text: str) -> tuple[list[int], tuple[torch.Tensor, ...]]:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        states = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
    return ids, states


def test_l2_matches_a_hand_computation(adapted: tuple[Any, Any]) -> None:
    model, tokenizer = adapted
    template = "The format is {token}."
    result = repr.repr_distances(model, tokenizer, "sep", SEP, ["json", "hallucination"], [template])
    sep_ids, sep_states = _hidden(model, tokenizer, "The format is <sep>.")
    sep_pos = sep_ids.index(tokenizer.convert_tokens_to_ids(SEP))
    prefix = len(tokenizer("The format is", add_special_tokens=False)["input_ids"])
    for keyword in ("json", "hallucination"):
        kw_ids, kw_states = _hidden(model, tokenizer, f"The format is {keyword}.")
        span = range(prefix, len(kw_ids) - 1)  # the keyword's tokens: after the prefix, before the "."
        expected = [
            float(torch.linalg.vector_norm(s[0, sep_pos] - k[0, list(span)].mean(0)))
            for s, k in zip(sep_states, kw_states, strict=True)
        ]
        got = result["keywords"][keyword]
        assert got["keyword_tokens_per_template"] == [len(span)]
        assert got["l2_mean"] == pytest.approx(expected, rel=1e-5)
        assert got["l2_std"] == pytest.approx([0.0] * len(expected), abs=1e-6)
    assert len(tokenizer(" hallucination", add_special_tokens=False)["input_ids"]) > 1, (
        "want a multi-token case"
    )
    assert result["n_blocks"] == model.config.num_hidden_layers == 2


def test_l2_averages_over_templates(adapted: tuple[Any, Any]) -> None:
    model, tokenizer = adapted
    templates = ["The format is {token}.", "Answer in {token} please."]
    both = repr.repr_distances(model, tokenizer, "sep", SEP, ["json"], templates)
    each = [repr.repr_distances(model, tokenizer, "sep", SEP, ["json"], [t]) for t in templates]
    mean = [(a + b) / 2 for a, b in zip(*(e["keywords"]["json"]["l2_mean"] for e in each), strict=True)]
    assert both["keywords"]["json"]["l2_mean"] == pytest.approx(mean, rel=1e-5)


def test_base_model_without_the_token_is_not_applicable(tiny_model: Any, tokenizer: Any) -> None:
    result = repr.repr_distances(tiny_model, tokenizer, "base", SEP, ["json"], ["The format is {token}."])
    assert result["applicable"] is False and "not in" in result["reason"]
    rows = repr.summary_rows([result], ["json"])
    assert rows == [{"run": "base", "json@first": "n/a", "json@middle": "n/a", "json@last": "n/a"}]


def test_template_needs_one_placeholder() -> None:
    with pytest.raises(DeliaError, match="exactly once"):
        repr.fill_template("no placeholder", "json")


def test_span_positions_include_leading_space_tokens() -> None:
    offsets = [(0, 3), (3, 10), (10, 13), (13, 18), (18, 19)]  # "The format is json." with 'Ġjson' = (13, 18)
    assert repr.span_token_positions(offsets, 14, 18) == [3]


def test_chat_wrapping_keeps_the_span(adapted: tuple[Any, Any]) -> None:
    _, tokenizer = adapted
    wrapped = repr.wrap_in_chat(tokenizer, repr.fill_template("Use {token} now.", SEP))
    assert wrapped.text[wrapped.start : wrapped.end] == SEP and "<|im_start|>user" in wrapped.text


def test_landmark_blocks() -> None:
    assert repr.landmark_blocks(30) == {"first": 1, "middle": 15, "last": 30}


# ---------------------------------------------------------------- divergent


def test_entropy_and_coverage_on_known_distributions() -> None:
    probs = torch.tensor([[0.5, 0.4, 0.1, 0.0], [0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0]])
    expected_entropy = [-(0.5 * math.log(0.5) + 0.4 * math.log(0.4) + 0.1 * math.log(0.1)), math.log(4), 0.0]
    assert divergent.entropy_nats(probs).tolist() == pytest.approx(expected_entropy, abs=1e-6)
    assert divergent.tokens_covering(probs, 0.9).tolist() == [2, 4, 1]
    assert divergent.tokens_covering(probs, 0.95).tolist() == [3, 4, 1]
    assert divergent.tokens_covering(torch.tensor([0.1, 0.2, 0.7]), 0.5).item() == 1  # order does not matter


def test_brace_mask_on_the_real_tokenizer(tokenizer: Any) -> None:
    mask = divergent.brace_token_mask(tokenizer, len(tokenizer) + 5)
    brace_ids = tokenizer("{", add_special_tokens=False)["input_ids"]
    assert mask[brace_ids[0]] and not mask[tokenizer("hello", add_special_tokens=False)["input_ids"][0]]
    assert not mask[len(tokenizer) :].any()  # padded vocabulary rows decode to nothing
    assert 10 < int(mask.sum()) < 2000


def test_divergent_stats_end_to_end(adapted: tuple[Any, Any]) -> None:
    model, tokenizer = adapted
    examples = _examples(3)
    result = divergent.divergent_stats(model, tokenizer, examples, "sep", batch_size=3, progress=False)
    one_by_one = divergent.divergent_stats(model, tokenizer, examples, "sep", batch_size=1, progress=False)
    # Left padding with real positions gives the same distributions as unpadded prompts.
    for a, b in zip(result["per_prompt"], one_by_one["per_prompt"], strict=True):
        assert a["entropy"] == pytest.approx(b["entropy"], rel=1e-4)
        assert a["p_brace"] == pytest.approx(b["p_brace"], rel=1e-3)
    # By hand for the shortest prompt (batch size 1 needs no padding).
    text = divergent.render_prompt(tokenizer, examples[0])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
    row = one_by_one["per_prompt"][0]
    assert row["entropy"] == pytest.approx(float(-(probs * probs.clamp_min(1e-30).log()).sum()), rel=1e-4)
    sorted_probs = probs.sort(descending=True).values.double().cumsum(0)
    assert row["tokens_at_mass"] == int((sorted_probs < 0.9).sum()) + 1
    first_answer_token = tokenizer("{'", add_special_tokens=False)["input_ids"][0]
    assert row["p_reference"] == pytest.approx(float(probs[first_answer_token]), rel=1e-4)
    assert result["summary"]["entropy"]["n"] == 3 and len(result["mean_distribution_top"]) == 10


# ---------------------------------------------------------------- gradients


def test_cosine_cancellation_and_directions_on_known_vectors() -> None:
    vectors = torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
    cos = gradients.cosine_matrix(vectors)
    assert cos.diagonal().tolist() == pytest.approx([1.0] * 4)
    assert (
        cos[0, 1] == pytest.approx(1.0) and cos[2, 3] == pytest.approx(-1.0) and cos[0, 2] == pytest.approx(0)
    )
    assert gradients.cancellation(vectors[:2]) == pytest.approx(1.0)
    assert gradients.cancellation(vectors[2:]) == pytest.approx(0.0)
    direction = gradients.principal_directions(vectors[:2], 1)
    assert gradients.subspace_component(vectors, direction).tolist() == pytest.approx([1.0, 2.0, 0.0, 0.0])


def test_batch_loss_is_the_mean_loss_on_answer_tokens(tiny_model: Any, tokenizer: Any) -> None:
    model = gradients.attach_fresh_lora(tiny_model, r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    examples = _examples(2)
    batch = gradients.encode_batch(tokenizer, examples, max_length=512)
    _, loss = gradients.batch_gradient(model, gradients.lora_parameters(model), batch)
    total, count = 0.0, 0
    for example in examples:  # by hand: HF's own loss with labels on the answer tokens only
        prompt = tokenizer.apply_chat_template(
            example.prompt_messages, tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(example.messages, tokenize=False)
        ids = tokenizer(full, add_special_tokens=False)["input_ids"]
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        labels = [-100] * n_prompt + ids[n_prompt:]
        with torch.no_grad():
            mean = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss
        total += float(mean) * (len(ids) - n_prompt)
        count += len(ids) - n_prompt
    assert batch.n_labels == count
    assert loss == pytest.approx(total / count, rel=1e-4)


def test_gradient_report_on_the_tiny_model(tiny_model: Any, tokenizer: Any) -> None:
    model = gradients.attach_fresh_lora(tiny_model, r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    task, diverse = _examples(8), _examples(8, "diverse")
    for i, ex in enumerate(diverse):
        diverse[i] = ex.with_instruction(f"Write a short poem about topic {i}.").with_response(
            f"Poem {i}: sky."
        )
    batches = [("task", task[i : i + 2]) for i in range(0, 8, 2)]
    batches += [("diverse", diverse[i : i + 2]) for i in range(0, 8, 2)]
    grads = gradients.compute_gradients(model, tokenizer, batches, max_length=128, progress=False)
    report = gradients.gradient_report(grads, ratio=4.0, top_k=1)
    assert set(report) >= {
        "cosine",
        "norms",
        "cancellation",
        "biased_directions",
        "per_batch",
        "cosine_matrix",
    }
    assert set(report["cosine"]) == {"task_task", "diverse_diverse", "task_diverse"}
    assert report["cosine"]["task_diverse"]["n_pairs"] == 16 and report["cosine"]["task_task"]["n_pairs"] == 6
    assert [row[i] for i, row in enumerate(report["cosine_matrix"])] == pytest.approx([1.0] * 8)
    # A fresh LoRA has B = 0: only the B half of the parameters receives gradient.
    assert report["n_params_with_gradient"] < report["n_params"]
    biased = report["biased_directions"]
    assert biased["task_weight"] == pytest.approx(0.2)
    assert 0 <= biased["fraction"]["mixed"] <= 1 and biased["fraction"]["random_baseline"] < 0.1
    assert all(g.vector.norm() > 0 for g in grads)


def test_gradient_report_needs_two_batches_per_source() -> None:
    one = [
        gradients.BatchGradient("task", torch.ones(3), 1.0, 3),
        gradients.BatchGradient("diverse", torch.ones(3), 1, 3),
    ]
    with pytest.raises(DeliaError, match="at least 2"):
        gradients.gradient_report(one, ratio=1.0)


# ---------------------------------------------------------------- losscurve


def _write_log(run_dir: Path, ratio: float, steps: int, with_eval: bool = True) -> None:
    run_dir.mkdir(parents=True)
    rows = []
    for step in range(1, steps + 1):
        row: dict[str, Any] = {"step": step, "loss": 3 - step * 0.1, "loss_task": 3.2 - step * 0.15}
        if ratio:
            row["loss_diverse"] = 2.5 - step * 0.05
        if with_eval and step % 2 == 0:
            row["eval_task_loss"] = 3.3 - step * 0.1
        rows.append(json.dumps(row))
    (run_dir / "train_log.jsonl").write_text("\n".join(rows) + '\n{"step": 99, "loss', encoding="utf-8")
    (run_dir / "config.yaml").write_text(f"mix:\n  ratio: {ratio}\n", encoding="utf-8")


def test_losscurve_writes_png_and_notes_missing_keys(tmp_path: Path) -> None:
    _write_log(tmp_path / "r0", ratio=0, steps=6)
    _write_log(tmp_path / "r10", ratio=10, steps=12, with_eval=False)
    out = tmp_path / "out"
    result = losscurve.run_losscurve_probe(
        [("r0", tmp_path / "r0"), ("r10", tmp_path / "r10")], out, smooth=3
    )
    assert (out / "losscurve.png").stat().st_size > 10_000
    by_run = {r["run"]: r for r in result["results"]}
    assert by_run["r0"]["ratio"] == 0 and by_run["r10"]["ratio"] == 10
    (tmp_path / "r10" / "plan.json").write_text('{"use_diverse": false, "ratio": 10}')
    assert losscurve.mix_ratio(tmp_path / "r10") == 0  # the plan's effective ratio wins
    assert by_run["r0"]["curves"]["eval_task_loss"]["step"] == [2, 4, 6]
    assert any("r0: no loss_diverse" in n for n in result["notes"])
    assert any("r10: no eval_task_loss or eval_loss" in n for n in result["notes"])
    assert any("1 unreadable line" in n for n in result["notes"])
    assert result["table"][1]["loss_task_last"] == pytest.approx(3.2 - 12 * 0.15)


def test_losscurve_reads_the_train_modules_eval_loss(tmp_path: Path) -> None:
    rows = [{"step": 1, "loss": 2.0, "loss_task": 2.0, "loss_diverse": None, "eval_loss": 2.5}]
    (tmp_path / "train_log.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    result = losscurve.run_curves("x", tmp_path)
    assert result["curves"]["eval_task_loss"] == {"step": [1], "value": [2.5]}
    assert "loss_diverse" not in result["curves"]  # nulls are no points


def test_moving_average() -> None:
    assert plots.moving_average([1, 2, 3, 4], 2) == [1, 1.5, 2.5, 3.5]
    assert plots.moving_average([1, 2], 1) == [1, 2]


def test_losscurve_without_any_loss_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "train_log.jsonl").write_text('{"step": 1}\n')
    with pytest.raises(DeliaError, match="no run's log"):
        losscurve.run_losscurve_probe([("x", tmp_path)], tmp_path / "out")


# ---------------------------------------------------------------- targets and CLI


def test_probe_targets_read_the_base_from_the_adapter(
    adapter_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    targets = probe_targets(None, [f"sep={adapter_dir}"])
    assert [(t.name, t.adapter_dir) for t in targets] == [("base", None), ("sep", adapter_dir)]
    assert all(t.model_spec == str(tiny_model_dir) for t in targets)
    run_dir = tmp_path / "my-run"  # a run directory names its adapter/ and the run after itself
    run_dir.mkdir()
    (run_dir / "adapter").symlink_to(adapter_dir)
    assert [(t.name, t.adapter_dir) for t in probe_targets("x", [str(run_dir)], include_base=False)] == [
        ("my-run", run_dir / "adapter")
    ]
    with pytest.raises(DeliaError, match="named 'base'"):
        probe_targets(None, [f"base={adapter_dir}"])
    with pytest.raises(DeliaError, match="no adapter"):
        probe_targets(None, [f"x={tiny_model_dir}"])


def _cli() -> typer.Typer:
    from delia.cli import chat, probe

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Keeps sub-commands named."""

    probe.register(app)
    chat.register(app)
    return app


def _invoke(args: list[str]) -> Any:
    result = CliRunner().invoke(_cli(), args)
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


def test_cli_repr(adapter_dir: Path, tmp_path: Path) -> None:
    result = _invoke(["probe", "repr", "--run", f"sep={adapter_dir}", "--out", str(tmp_path)])
    assert "n/a" in result.output
    table = (tmp_path / "repr_table.csv").read_text().splitlines()
    assert table[0] == "run,json@first,json@middle,json@last,thought@first,thought@middle,thought@last"
    assert table[1].startswith("base,n/a") and table[2].startswith("sep,")
    assert (tmp_path / "repr.png").stat().st_size > 10_000
    data = json.loads((tmp_path / "repr.json").read_text())
    assert data["settings"]["templates"] == list(repr.DEFAULT_TEMPLATES)


def test_cli_divergent(adapter_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "eval.jsonl"
    write_jsonl(data, _examples(3))
    _invoke(
        [
            "probe",
            "divergent",
            str(data),
            "--run",
            f"sep={adapter_dir}",
            "--limit",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    rows = (tmp_path / "divergent.csv").read_text().splitlines()
    assert rows[0].startswith("run,n_prompts,mass,entropy_mean") and len(rows) == 3
    with open(tmp_path / "divergent_per_prompt.csv", newline="") as handle:
        per_prompt = list(csv.DictReader(handle))  # decoded tokens may hold line breaks: read it as CSV
    assert [row["run"] for row in per_prompt] == ["base", "base", "sep", "sep"]
    assert (tmp_path / "divergent.png").stat().st_size > 10_000


def test_cli_gradients(adapter_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "mixed.jsonl"
    diverse = [ex.with_response(f"Reply {i}.") for i, ex in enumerate(_examples(4, "diverse"))]
    write_jsonl(data, [*_examples(4), *[ex.with_instruction(f"Say {i}.") for i, ex in enumerate(diverse)]])
    args = [
        "probe",
        "gradients",
        str(data),
        "--adapter",
        str(adapter_dir),
        "--batches",
        "2",
        "--batch-size",
        "2",
    ]
    _invoke([*args, "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gradients.json").read_text())
    assert report["batches"] == {"task": 2, "diverse": 2}
    assert report["biased_directions"]["ratio"] == 1.0  # the file's diverse:task count
    # A loaded adapter (non-zero B) has gradient on every LoRA weight.
    assert report["n_params_with_gradient"] == report["n_params"]
    assert "cosine task-diverse" in (tmp_path / "gradients.csv").read_text()
    assert (tmp_path / "gradients.png").stat().st_size > 10_000


def test_cli_losscurve(tmp_path: Path) -> None:
    _write_log(tmp_path / "run", ratio=5, steps=4)
    _invoke(
        ["probe", "losscurve", "--run", f"r5={tmp_path / 'run'}", "--x", "progress", "--out", str(tmp_path)]
    )
    assert (tmp_path / "losscurve.png").exists() and (tmp_path / "losscurve_table.md").exists()


def test_cli_chat_compare(adapter_dir: Path, tmp_path: Path) -> None:
    context = tmp_path / "context.txt"
    context.write_text("'user_query' : Name a colour.\n'chatgpt_response' : Blue.")
    args = ["chat", "--adapter", str(adapter_dir), "--compare", "follow the <sep> format", "DO NOT follow it"]
    result = _invoke([*args, "--context", str(context), "--max-new-tokens", "4", "--json"])
    answers = json.loads(result.stdout)["answers"]
    assert [a["instruction"] for a in answers] == ["follow the <sep> format", "DO NOT follow it"]
    assert json.loads(result.stdout)["context"].startswith("'user_query'")
    table = _invoke([*args, "--context", "plain text context", "--max-new-tokens", "4"])
    assert "DO NOT follow it" in table.output


def test_cli_chat_needs_compare_for_several_prompts(adapter_dir: Path) -> None:
    result = CliRunner().invoke(_cli(), ["chat", "--adapter", str(adapter_dir), "one", "two"])
    assert isinstance(result.exception, DeliaError)
