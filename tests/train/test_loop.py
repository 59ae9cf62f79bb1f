"""delia.train end to end on the tiny model: what changes, what is logged, resume, the saved adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from delia.core.config import RunConfig
from delia.core.errors import DeliaError
from delia.core.example import Example
from delia.train import TrainerHooks, fit, load_adapter_model, load_for_training, train_model
from delia.train.lora import trainable_parameters


def examples(n: int = 12) -> list[Example]:
    rows = []
    for i in range(n):
        source = "task" if i % 3 == 0 else "diverse"
        user = (
            f"Context {i}: "
            + "words " * (i % 5 + 1)
            + ("Answer in the <sep> format." if source == "task" else "")
        )
        answer = (
            "{'thought': 'ok', 'hallucination': 'no'}" if source == "task" else f"reply {i} " * (i % 4 + 1)
        )
        rows.append(
            Example(
                messages=[{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
                source=source,
            )
        )
    return rows


def config(model_dir: Path, **train: Any) -> RunConfig:
    settings = {"batch_size": 4, "micro_batch_size": 2, "lr": 5e-3, "epochs": 2, "max_length": 128, **train}
    return RunConfig.model_validate(
        {
            "model": {"name": str(model_dir)},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj", "down_proj"]},
            "train": settings,
        }
    )


@pytest.fixture(scope="module")
def trained(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    cfg = config(tiny_model_dir, eval_every=3)
    model, tokenizer, token_ids = load_for_training(cfg)
    base = {name: p.detach().clone() for name, p in model.named_parameters()}
    out = tmp_path_factory.mktemp("run")
    data = examples()
    result = fit(cfg, model, tokenizer, token_ids, data, out, eval_examples=data[:4])
    return result, base, token_ids, out


def test_sep_row_changes_and_frozen_weights_do_not(trained: Any) -> None:
    result, base, (sep,), _ = trained
    model = result.model
    embed = model.get_base_model().get_input_embeddings()
    assert not torch.allclose(embed(torch.tensor([sep])), base["model.embed_tokens.weight"][sep], atol=1e-4)
    for name, param in model.get_base_model().named_parameters():
        key = name.replace(".base_layer", "").replace("token_adapter.", "")
        if key in base:  # every original weight, LoRA-wrapped or not
            assert torch.equal(param.detach(), base[key]), name
    trainable = [name for name, _ in trainable_parameters(model)]
    assert any("lora_B" in name for name in trainable) and any(
        "trainable_tokens_delta" in name for name in trainable
    )


def test_train_log_has_a_row_per_step_with_per_source_losses(trained: Any) -> None:
    result, _, _, out = trained
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == list(
        range(1, result.result.steps + 1)
    ) and result.result.steps == 6
    for row in rows:
        assert {"loss", "loss_task", "loss_diverse", "lr", "tokens", "tokens_per_s", "elapsed"} <= row.keys()
        parts = [(row[f"loss_{s}"], s) for s in ("task", "diverse") if row[f"loss_{s}"] is not None]
        assert parts and min(p for p, _ in parts) - 1e-6 <= row["loss"] <= max(p for p, _ in parts) + 1e-6
    assert all("eval_loss" in row for row in rows if row["step"] % 3 == 0)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert result.result.final_loss == pytest.approx(rows[-1]["loss"], abs=1e-6)
    assert result.result.tokens == sum(row["tokens"] for row in rows)


def test_adapter_round_trip_gives_the_same_logits(trained: Any, tiny_model_dir: Path) -> None:
    result, _, (sep,), out = trained
    adapter = out / "adapter"
    manifest = json.loads((adapter / "delia_adapter.json").read_text())
    assert manifest["base_model"] == str(tiny_model_dir) and manifest["new_tokens"] == {"<sep>": sep}
    assert (out / "config.yaml").exists() and (adapter / "adapter_config.json").exists()
    model, tokenizer = load_adapter_model(str(tiny_model_dir), adapter)
    ids = torch.tensor([tokenizer("Reply in <sep> format")["input_ids"]])
    assert sep in ids[0].tolist()
    in_memory = result.model.eval()
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, in_memory(input_ids=ids).logits, atol=1e-5)


class Crash(TrainerHooks):
    """Dies in the middle of a step, after an earlier step was checkpointed."""

    def __init__(self, at_call: int) -> None:
        self.calls, self.at_call = 0, at_call

    def before_optimizer_step(self, model: Any, optimizer: torch.optim.Optimizer) -> None:
        self.calls += 1
        if self.calls == self.at_call:
            raise KeyboardInterrupt


def adapter_weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def test_killed_and_resumed_run_equals_uninterrupted(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = config(tiny_model_dir, checkpoint_every=2)
    data = examples()
    whole = train_model(cfg, data, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train_model(cfg, data, tmp_path / "killed", hooks=Crash(at_call=5))
    assert sorted(p.name for p in (tmp_path / "killed" / "checkpoints").iterdir()) == [
        "step-00000002",
        "step-00000004",
    ]
    resumed = train_model(cfg, data, tmp_path / "killed", resume=True)
    assert resumed.resumed_from == 4 and resumed.steps == whole.steps == 6
    expected, got = adapter_weights(tmp_path / "whole"), adapter_weights(tmp_path / "killed")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-5), name
    log = [json.loads(line) for line in (tmp_path / "killed" / "train_log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4, 5, 6]
    assert resumed.final_loss == pytest.approx(whole.final_loss, abs=1e-5)


def test_resume_with_other_data_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = config(tiny_model_dir, max_steps=1)
    train_model(cfg, examples(), tmp_path)
    with pytest.raises(DeliaError, match="other data"):
        train_model(cfg, examples(9), tmp_path, resume=True)


def test_gradient_accumulation_matches_one_big_batch(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Micro-batches of 1 and of 4 give the same update: the loss is weighted per label token."""
    weights = []
    for micro in (1, 4):
        cfg = config(tiny_model_dir, micro_batch_size=micro, max_steps=2, autocast="none")
        cfg.lora.dropout = 0.0
        train_model(cfg, examples(), tmp_path / str(micro))
        weights.append(adapter_weights(tmp_path / str(micro)))
    for name in weights[0]:
        assert torch.allclose(weights[0][name], weights[1][name], atol=1e-5), name


@pytest.mark.slow
def test_compiled_layers_train_like_eager(tiny_model_dir: Path, tmp_path: Path) -> None:
    """train.compile changes speed, not results (no dropout, fp32: the same numbers up to rounding)."""
    weights = []
    for compiled in (False, True):
        cfg = config(tiny_model_dir, max_steps=2, autocast="none", compile=compiled)
        cfg.lora.dropout = 0.0
        train_model(cfg, examples(8), tmp_path / str(compiled))
        weights.append(adapter_weights(tmp_path / str(compiled)))
    for name in weights[0]:
        assert torch.allclose(weights[0][name], weights[1][name], atol=1e-4), name


def test_adapter_from_gathered_weights_equals_peft_own_save(trained: Any, tmp_path: Path) -> None:
    """Under FSDP the adapter is written from whole tensors gathered by name: the same file PEFT writes."""
    from safetensors.torch import load_file

    from delia.train.lora import adapter_parameters
    from delia.train.sharding import full_tensors

    _, _, _, out = trained
    model, _ = load_adapter_model("", out / "adapter")
    model.save_pretrained(tmp_path / "own", save_embedding_layers=False)
    weights = full_tensors(adapter_parameters(model))
    model.save_pretrained(tmp_path / "gathered", state_dict=weights, save_embedding_layers=False)
    own = load_file(str(tmp_path / "own" / "adapter_model.safetensors"))
    gathered = load_file(str(tmp_path / "gathered" / "adapter_model.safetensors"))
    assert own.keys() == gathered.keys() and any("trainable_tokens" in k for k in own)
    assert all(torch.equal(own[k], gathered[k]) for k in own)


def test_hooks_that_change_training_are_refused_under_fsdp(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from delia.train.runtime import Runtime

    class Surgery(TrainerHooks):
        def before_optimizer_step(self, model: Any, optimizer: torch.optim.Optimizer) -> None:
            pass

    monkeypatch.setattr(Runtime, "create", classmethod(lambda cls, device: cls("cpu", sharded=True)))
    cfg = config(tiny_model_dir, max_steps=1)
    with pytest.raises(DeliaError, match="runs under DDP, not FSDP"):
        train_model(cfg, examples(), tmp_path, hooks=Surgery())
