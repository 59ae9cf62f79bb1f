"""`delia export`: each format loads with plain transformers (+ peft) and answers as the adapter does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_runner import run_cli
from safetensors.torch import load_file

from delia.core.errors import DeliaError
from delia.export import RECORD, WRITERS, export_run
from delia.export.gguf_file import GGUF_NAME, check_exportable
from delia.export.source import refuse_forward_hooks
from delia.methods import load_trained

PROMPT = "Text 3: Jon is a baker in Reykjavik. Answer in the <sep> format."
ANSWER_TOKENS = 12


def prompt_ids(tokenizer: Any) -> torch.Tensor:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]


def answer(model: Any, ids: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """(logits over the prompt, greedy answer tokens)."""
    with torch.inference_mode():
        logits = model(input_ids=ids).logits.float()
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=ANSWER_TOKENS,
            min_new_tokens=ANSWER_TOKENS,
            do_sample=False,
        )
    return logits, out[0, ids.shape[1] :].tolist()


def reference(run: Any) -> tuple[Any, torch.Tensor, torch.Tensor, list[int]]:
    """The adapter through delia's loader: (tokenizer, prompt ids, logits, greedy answer); and checks that
    the adapter moves the logits far more than any tolerance below, so an export that lost it fails."""
    model, tokenizer = load_trained("", run.adapter_dir)
    ids = prompt_ids(tokenizer)
    logits, tokens = answer(model, ids)
    with model.disable_adapter():
        base_logits, _ = answer(model, ids)
    assert (logits - base_logits).abs().max().item() > 1.0
    return tokenizer, ids, logits, tokens


def sep_rows(run: Any) -> dict[str, torch.Tensor]:
    """The trained `<sep>` rows stored in the adapter file, by PEFT's module name."""
    weights = load_file(str(run.adapter_dir / "adapter_model.safetensors"))
    return {name: tensor for name, tensor in weights.items() if "trainable_tokens" in name}


@pytest.mark.parametrize("which", ["tied_run", "untied_run", "gemma_run"])
def test_merged_loads_alone_and_answers_as_the_adapter(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = request.getfixturevalue(which)
    tokenizer, ids, logits, tokens = reference(run)
    export_run(run.run_dir, tmp_path / "merged", "merged")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    merged_logits, merged_tokens = answer(model, ids)
    assert merged_tokens == tokens and len(set(tokens)) > 1
    assert (merged_logits - logits).abs().max().item() < 1e-4
    sep = tokenizer.convert_tokens_to_ids("<sep>")
    assert AutoTokenizer.from_pretrained(tmp_path / "merged").convert_tokens_to_ids("<sep>") == sep
    rows = sep_rows(run)
    embed_row = next(t for name, t in rows.items() if "embed_tokens" in name)[0]
    assert torch.equal(model.get_input_embeddings().weight[sep], embed_row)
    if which == "untied_run":  # the head's own trained row, not the embedding's
        head_row = next(t for name, t in rows.items() if "lm_head" in name)[0]
        assert torch.equal(model.get_output_embeddings().weight[sep], head_row)
        assert not torch.equal(head_row, embed_row)
    files = {path.name for path in (tmp_path / "merged").iterdir()}
    assert "model.safetensors" in files and not any(name.endswith((".bin", ".pt")) for name in files)
    assert json.loads((tmp_path / "merged" / RECORD).read_text())["new_tokens"] == {"<sep>": sep}


def test_vllm_export_is_a_grown_base_and_a_plain_lora(untied_run: Any, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tokenizer, ids, logits, tokens = reference(untied_run)
    export_run(untied_run.run_dir, tmp_path / "out", "vllm", lora_name="demo")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "base").eval()
    sep = tokenizer.convert_tokens_to_ids("<sep>")
    assert base.config.vocab_size == len(tokenizer) == sep + 1
    for name, row in sep_rows(untied_run).items():
        matrix = base.get_input_embeddings() if "embed_tokens" in name else base.get_output_embeddings()
        assert torch.equal(matrix.weight[sep], row[0]), name
    adapter = tmp_path / "out" / "adapter"
    assert not [name for name in load_file(str(adapter / "adapter_model.safetensors")) if "lora_" not in name]
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["trainable_token_indices"] is None and not config.get("modules_to_save")
    served_logits, served_tokens = answer(PeftModel.from_pretrained(base, str(adapter)).eval(), ids)
    assert served_tokens == tokens and (served_logits - logits).abs().max().item() < 1e-4
    readme = (tmp_path / "out" / "README.md").read_text()
    command = f"vllm serve {(tmp_path / 'out').resolve()}/base --enable-lora --lora-modules demo="
    assert command in readme and '"skip_special_tokens": false' in readme


@pytest.mark.parametrize(("dtype", "tolerance"), [("float32", 1e-3), ("float16", 0.1)])
def test_gguf_reads_back_through_transformers(
    dtype: str, tolerance: float, untied_run: Any, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, ids, logits, tokens = reference(untied_run)
    export_run(untied_run.run_dir, tmp_path / "gguf", "gguf", dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "gguf", gguf_file=GGUF_NAME, dtype=torch.float32)
    gguf_logits, gguf_tokens = answer(model.eval(), ids)
    assert not model.config.tie_word_embeddings  # the untied head went in as its own tensor
    assert gguf_tokens == tokens
    assert (gguf_logits - logits).abs().max().item() < tolerance
    rebuilt = AutoTokenizer.from_pretrained(tmp_path / "gguf", gguf_file=GGUF_NAME)
    assert torch.equal(prompt_ids(rebuilt), ids)


def test_gguf_of_a_tied_model_has_no_output_tensor(tied_run: Any, tmp_path: Path) -> None:
    from gguf import GGUFReader

    export_run(tied_run.run_dir, tmp_path / "gguf", "gguf")
    names = {tensor.name for tensor in GGUFReader(str(tmp_path / "gguf" / GGUF_NAME)).tensors}
    assert "token_embd.weight" in names and "output.weight" not in names and "blk.1.attn_q.weight" in names


def test_gguf_refuses_other_architectures_in_one_line() -> None:
    from transformers import LlamaConfig, Qwen2Config

    with pytest.raises(DeliaError, match="llama architecture; this model is 'qwen2'") as err:
        check_exportable(Qwen2Config())
    assert "\n" not in str(err.value)
    with pytest.raises(DeliaError, match="rope scaling"):
        check_exportable(LlamaConfig(rope_scaling={"rope_type": "linear", "factor": 2.0}))


def test_run_time_parts_are_refused() -> None:
    module = torch.nn.Sequential(torch.nn.Linear(2, 2))
    module[0].register_forward_hook(lambda *_: None)
    with pytest.raises(DeliaError, match="run-time parts"):
        refuse_forward_hooks(module, Path("runs/x/adapter"))


def test_a_crash_leaves_no_half_export_and_keeps_the_earlier_one(
    tied_run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "exports" / "x"

    def crash(source: Any, out: Path, options: Any) -> None:
        (out / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    monkeypatch.setitem(WRITERS, "merged", crash)
    with pytest.raises(RuntimeError):
        export_run(tied_run.run_dir, target, "merged")
    assert list(target.parent.iterdir()) == []
    monkeypatch.undo()
    export_run(tied_run.run_dir, target, "merged")
    earlier = (target / "model.safetensors").read_bytes()
    monkeypatch.setitem(WRITERS, "merged", crash)
    with pytest.raises(RuntimeError):
        export_run(tied_run.run_dir, target, "merged")
    assert (target / "model.safetensors").read_bytes() == earlier
    assert [path.name for path in target.parent.iterdir()] == ["x"]


def test_cli_exports_and_prints_what_it_wrote(
    tied_run: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ["export", str(tied_run.run_dir), "--to", str(tmp_path / "v"), "--format", "vllm", "--json"]
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code == 0, err
    result = json.loads(out)
    assert result["format"] == "vllm" and "adapter/adapter_model.safetensors" in result["files"]
    assert json.loads((tmp_path / "v" / RECORD).read_text())["lora_name"] == "run"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--format", "onnx"], "--format 'onnx': choose merged, vllm, gguf"),
        (["--format", "gguf", "--dtype", "bfloat16"], "choose float32 or float16"),
        (["--dtype", "int8"], "--dtype 'int8'"),
        (["--to", "{file}"], "a file is there"),
        (["--to", "{others}"], "not a delia export"),
        (["--format", "vllm", "--name", "my lora"], "may hold no spaces"),
    ],
)
def test_cli_refuses_bad_input_in_one_line(
    extra: list[str],
    message: str,
    tied_run: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "others").mkdir()
    (tmp_path / "others" / "notes.txt").write_text("mine")
    paths = {"file": str(tmp_path / "file"), "others": str(tmp_path / "others")}
    args = ["export", str(tied_run.run_dir), "--to", str(tmp_path / "new")]
    code, _, err = run_cli([*args, *(arg.format(**paths) for arg in extra)], capsys, monkeypatch)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in (tmp_path / "others").iterdir()) == ["notes.txt"]


def test_cli_names_a_missing_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run_cli(
        ["export", str(tmp_path / "nope"), "--to", str(tmp_path / "x")], capsys, monkeypatch
    )
    assert code == 2 and "does not exist" in err and not (tmp_path / "x").exists()
