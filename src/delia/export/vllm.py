"""`--format vllm`: what vLLM can serve, since it takes no vocabulary from an adapter (its PRs #28382 and
#28545) and no PEFT trainable tokens (its issue #36501):

  base/     the base model with the vocabulary grown to the adapter's tokenizer and the new tokens' trained
            rows written in, with that tokenizer: one base for every adapter trained with the same tokens
  adapter/  the plain LoRA, no token rows
  README.md the `vllm serve` command, and the special-token caveat
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import torch

from delia.core.errors import DeliaError
from delia.core.models import portable_spec
from delia.export.source import (
    Options,
    Source,
    check_new_tokens_found,
    token_rows,
    torch_dtype,
    write_token_rows,
)

BASE_DIR = "base"
ADAPTER_DIR = "adapter"
VLLM_DEFAULT_MAX_LORA_RANK = 16


def write_vllm(source: Source, out: Path, options: Options) -> None:
    """base/, adapter/ and README.md, written into `out`."""
    name = served_name(options.lora_name or source.name)
    dtype = torch_dtype(options.dtype)
    rows = token_rows(source.model)
    check_new_tokens_found(source, rows)
    lora = lora_weights(source.model)
    config = plain_lora_config(source)
    base = source.model.unload()  # the base modules back, LoRA and token adapters dropped, nothing merged
    write_token_rows(base, rows)
    base.to(dtype).save_pretrained(out / BASE_DIR)
    source.tokenizer.save_pretrained(out / BASE_DIR)
    save_lora(out / ADAPTER_DIR, config, {key: tensor.to(dtype) for key, tensor in lora.items()})
    (out / "README.md").write_text(readme(source, options.target.resolve(), name, config.r), encoding="utf-8")


def served_name(name: str) -> str:
    """The LoRA's name in `--lora-modules NAME=PATH`: a space or '=' in it would break the command."""
    if not name or re.search(r"[\s=]", name):
        raise DeliaError(f"--name {name!r}: the served LoRA name may hold no spaces or '='; give another")
    return name


def lora_weights(model: Any) -> dict[str, torch.Tensor]:
    """The adapter's LoRA matrices under PEFT's saved names, without the trainable-token rows."""
    from peft import get_peft_model_state_dict

    # save_embedding_layers=False: "auto" would look the base up on the hub to compare vocabularies.
    state = get_peft_model_state_dict(model, save_embedding_layers=False)
    weights = {name: t.detach().contiguous() for name, t in state.items() if "trainable_tokens" not in name}
    if not weights:
        raise DeliaError("the adapter has no LoRA weights: export --format merged")
    return weights


def plain_lora_config(source: Source) -> Any:
    config = copy.deepcopy(source.model.peft_config[source.model.active_adapter])
    if getattr(config, "modules_to_save", None):
        raise DeliaError(
            f"{source.adapter_dir}: the adapter saves whole modules ({config.modules_to_save}), "
            "which vLLM does not load; use --format merged"
        )
    config.trainable_token_indices = None
    config.base_model_name_or_path = portable_spec(source.base_spec)
    config.inference_mode = True
    return config


def save_lora(directory: Path, config: Any, weights: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    directory.mkdir(parents=True)
    config.save_pretrained(str(directory))
    save_file(weights, str(directory / "adapter_model.safetensors"), metadata={"format": "pt"})


def readme(source: Source, target: Path, name: str, rank: int) -> str:
    tokens = ", ".join(source.manifest.get("new_tokens", {})) or "none"
    rank_flag = f" --max-lora-rank {rank}" if rank > VLLM_DEFAULT_MAX_LORA_RANK else ""
    return f"""# {source.name}: for vLLM

- `base/`: the base model ({portable_spec(source.base_spec)}) with its vocabulary grown to the adapter's
  tokenizer and the trained rows of the new tokens ({tokens}) written in, and that tokenizer.
- `adapter/`: the LoRA alone (rank {rank}), no token rows: vLLM loads neither an adapter's vocabulary nor
  PEFT's trainable tokens. Other adapters trained with the same tokens can share `base/`.

Serve it:

```
vllm serve {target}/{BASE_DIR} --enable-lora --lora-modules {name}={target}/{ADAPTER_DIR}{rank_flag}
```

and ask for model `{name}` (the base alone is model `{target}/{BASE_DIR}`).

vLLM leaves special tokens such as `<sep>` out of the text it returns (`skip_special_tokens` is true by
default); to see them, send `"skip_special_tokens": false` with the request (with the openai client:
`extra_body={{"skip_special_tokens": False}}`). Prompts may contain them either way.

Written by `delia export --format vllm`.
"""
