"""`--format merged`: LoRA and the trained token rows merged into the base, saved as a plain transformers
checkpoint (safetensors) with the tokenizer that knows the new tokens."""

from __future__ import annotations

from pathlib import Path

from delia.export.source import Options, Source, merge, torch_dtype


def write_merged(source: Source, out: Path, options: Options) -> None:
    """The merged checkpoint, written into `out`."""
    model = merge(source).to(torch_dtype(options.dtype))
    model.save_pretrained(out)
    source.tokenizer.save_pretrained(out)
    (out / "README.md").write_text(readme(source, options.target.resolve()), encoding="utf-8")


def readme(source: Source, target: Path) -> str:
    tokens = ", ".join(source.manifest.get("new_tokens", {})) or "none"
    return f"""# {source.name}: merged checkpoint

The run's LoRA merged into its base model, with the trained rows of its new tokens ({tokens}) written
into the embedding matrix, and the tokenizer that knows them. Written by `delia export --format merged`.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{target}")
tokenizer = AutoTokenizer.from_pretrained("{target}")
```

Serve it with `transformers serve {target}` (needs `transformers[serving]`) or `vllm serve {target}`.
Both leave special tokens such as `<sep>` out of the answers they return: vLLM keeps them when a request
sets `"skip_special_tokens": false`, `transformers serve` always drops them. Prompts may contain them.
"""
