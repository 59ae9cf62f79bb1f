"""The trained run an export starts from: its adapter loaded on its base, the rows its new tokens were
trained to, and the merge of both into plain weights (checked against the adapter before anything is
written)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from delia.core.adapters import resolve_adapter_dir
from delia.core.errors import DeliaError
from delia.core.io import read_json
from delia.core.models import base_record as describe_base
from delia.core.models import pick_dtype, portable_spec
from delia.methods import load_trained
from delia.train.artifacts import BASE_RECORD, base_spec_of, read_manifest

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# A user turn with the new token in it, through the chat template: what the merged model is checked on.
PROBE_TEXT = "Answer in the <sep> format: is the sky green?"
# Merging adds B @ A into W once instead of at each forward: float32 rounding only (about 1e-4 on SmolLM2's
# logits of up to ~30), against differences of whole units when a part of the adapter is lost.
MERGE_TOLERANCE = 1e-3  # relative to the largest logit


@dataclass(frozen=True)
class Options:
    """What a format writer is told besides its source: where the export lands (the READMEs name it; the
    writer itself fills a temp directory beside it), the weights' dtype, the LoRA's served name (vllm)."""

    target: Path
    dtype: str = "float32"
    lora_name: str | None = None


@dataclass
class Source:
    """A run's adapter on its base model (float32, CPU, eval mode) and what it records."""

    adapter_dir: Path
    base_spec: str
    model: PeftModel
    tokenizer: PreTrainedTokenizerBase
    manifest: dict[str, Any]

    @property
    def name(self) -> str:
        """The run's name: the run directory's, for an adapter at `runs/NAME/adapter` (or train/adapter)."""
        resolved = self.adapter_dir.resolve()
        if resolved.name != "adapter":
            return resolved.name
        parent = resolved.parent
        return parent.parent.name if parent.name == "train" else parent.name

    def base_record(self) -> dict[str, Any]:
        """Where the exported base's weights came from: the adapter's delia_base.json when the export is on
        the base it was trained on, else (an older adapter, or --model) what delia can say of that base."""
        stored = read_json(self.adapter_dir / BASE_RECORD)
        if stored and stored.get("spec") == portable_spec(self.base_spec):
            return stored
        return describe_base(self.base_spec)


def load_source(run: str | Path, model_spec: str | None = None) -> Source:
    """The adapter of `run` (a run directory or an adapter directory) on its base, or on `model_spec`."""
    adapter_dir = resolve_adapter_dir(run)
    spec = model_spec or base_spec_of(adapter_dir)
    model, tokenizer = load_trained(spec, adapter_dir, "cpu")
    if not hasattr(model, "merge_and_unload"):
        raise DeliaError(f"{adapter_dir}: not a PEFT adapter that can be merged")
    refuse_forward_hooks(model, adapter_dir)
    return Source(adapter_dir, spec, model, tokenizer, read_manifest(adapter_dir))


def refuse_forward_hooks(model: torch.nn.Module, adapter_dir: Path) -> None:
    """A method that adds input-dependent parts at run time (TKI's retrieved latents) has nothing that plain
    weights could hold: refuse rather than export a model that answers differently."""
    hooked = next((n for n, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks), None)
    if hooked is not None:
        raise DeliaError(
            f"{adapter_dir}: its method adds run-time parts (forward hooks on {hooked or 'the model'}) that "
            "no exported checkpoint can hold; export plain LoRA runs"
        )


def token_rows(model: PeftModel) -> dict[str, tuple[list[int], torch.Tensor]]:
    """The trained rows of the new tokens, by matrix ("input", and "output" for an untied head): PEFT's
    trainable-token values, which replace those rows of the base matrix whole."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    base = model.get_base_model()
    adapter = model.active_adapter
    rows: dict[str, tuple[list[int], torch.Tensor]] = {}
    for role, module in (("input", base.get_input_embeddings()), ("output", base.get_output_embeddings())):
        layer = getattr(module, "token_adapter", module)
        if isinstance(layer, TrainableTokensLayer) and adapter in layer.token_indices:
            values = layer.trainable_tokens_delta[adapter].detach().clone()
            rows[role] = (list(layer.token_indices[adapter]), values)
    return rows


def write_token_rows(model: PreTrainedModel, rows: dict[str, tuple[list[int], torch.Tensor]]) -> None:
    """Write `rows` into a plain model's matrices (a tied head shares the input matrix, so gets them too)."""
    matrices = {"input": model.get_input_embeddings(), "output": model.get_output_embeddings()}
    for role, (ids, values) in rows.items():
        weight = matrices[role].weight
        with torch.no_grad():
            weight[torch.tensor(ids, device=weight.device)] = values.to(weight.dtype).to(weight.device)


def check_new_tokens_found(source: Source, rows: dict[str, tuple[list[int], torch.Tensor]]) -> None:
    """An adapter that added tokens carries their rows as trainable tokens; without them (whole embedding
    modules saved by an old PEFT) the rows cannot be written apart from the LoRA."""
    if source.manifest.get("new_tokens") and "input" not in rows:
        raise DeliaError(
            f"{source.adapter_dir}: its new tokens' rows are not PEFT trainable tokens; "
            "use --format merged, which merges whole modules"
        )


def probe_ids(tokenizer: PreTrainedTokenizerBase) -> torch.Tensor:
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": PROBE_TEXT}], add_generation_prompt=True, tokenize=False
        )
    else:
        text = PROBE_TEXT
    return torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=ids).logits.float()


def merge(source: Source) -> PreTrainedModel:
    """LoRA merged into the base weights and the trained token rows written in, checked to give the
    adapter's logits on a probe prompt; `source.model` is consumed (PEFT merges in place). Rows saved as
    whole modules (an old PEFT's modules_to_save) are merged by PEFT itself; the check covers them too."""
    rows = token_rows(source.model)
    ids = probe_ids(source.tokenizer)
    expected = logits(source.model, ids)
    merged = source.model.merge_and_unload()
    write_token_rows(merged, rows)
    difference = (logits(merged, ids) - expected).abs().max().item()
    if difference > MERGE_TOLERANCE * max(1.0, expected.abs().max().item()):
        raise DeliaError(
            f"{source.adapter_dir}: the merged model's logits differ from the adapter's by {difference:.3g} "
            "on a probe prompt; nothing was exported"
        )
    return merged.eval()


def torch_dtype(dtype: str) -> torch.dtype:
    """--dtype (float32, bfloat16 or float16, checked by the caller) as a torch dtype."""
    return pick_dtype(dtype, "cpu")
