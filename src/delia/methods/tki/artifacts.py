"""The TKI artefact inside an adapter directory, next to PEFT's files (the task LoRA):

  tki.json                  marker + LatentSpec (shapes, retrieval settings, encoder) + KR summary
  tki_latents.safetensors   keys, training-mean centre, every target's stacked A and B

The model `delia eval` scores is base + task LoRA (PEFT) + latent increments with retrieval from the
prompt: `delia.methods.load_trained` loads the PEFT part, then `TkiHooks.load` calls
`attach_saved_latents` when the marker exists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from delia.core.errors import DeliaError

MARKER = "tki.json"
WEIGHTS = "tki_latents.safetensors"
FORMAT_VERSION = 1


def is_tki_adapter(adapter_dir: str | Path | None) -> bool:
    return adapter_dir is not None and (Path(adapter_dir) / MARKER).exists()


def save_tki(adapter_dir: str | Path, adapter: Any, summary: dict[str, Any]) -> None:
    """Write the marker (always: it records the KR settings too) and the latent weights when LTA is on."""
    from safetensors.torch import save_file

    from delia.core.io import write_json

    adapter_dir = Path(adapter_dir)
    adapter_dir.mkdir(parents=True, exist_ok=True)
    marker = {"format": FORMAT_VERSION, "lta": adapter is not None, "summary": summary}
    if adapter is not None:
        marker["spec"] = adapter.spec.to_dict()
        tensors = {name: t.detach().float().cpu().contiguous() for name, t in adapter.tensors().items()}
        save_file(tensors, str(adapter_dir / WEIGHTS))
    write_json(adapter_dir / MARKER, marker)


def read_marker(adapter_dir: str | Path) -> dict[str, Any]:
    path = Path(adapter_dir) / MARKER
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DeliaError(f"{path}: unreadable TKI marker ({err})") from None
    if marker.get("format") != FORMAT_VERSION:
        raise DeliaError(f"{path}: TKI artefact format {marker.get('format')!r}, expected {FORMAT_VERSION}")
    return marker


def attach_saved_latents(model: Any, tokenizer: Any, adapter_dir: str | Path, device: str = "cpu") -> Any:
    """Rebuild the latent adapter saved in adapter_dir onto an already loaded PEFT model (None if LTA was
    off: then the PEFT adapter alone is the whole artefact)."""
    from safetensors.torch import load_file

    from delia.methods.tki.encoder import BaseModelEncoder, default_cache_dir, make_encoder
    from delia.methods.tki.lta import LatentAdapter, LatentSpec

    marker = read_marker(adapter_dir)
    if not marker["lta"]:
        return None
    spec = LatentSpec(**marker["spec"])
    adapter = LatentAdapter(spec)
    weights = Path(adapter_dir) / WEIGHTS
    if not weights.exists():
        raise DeliaError(f"{weights} is missing: the TKI artefact is incomplete")
    try:
        missing, unexpected = adapter.load_tensors(load_file(str(weights)))
    except RuntimeError as err:  # shape mismatches
        raise DeliaError(f"{weights}: does not match its tki.json ({str(err).splitlines()[0]})") from None
    if missing or unexpected:
        raise DeliaError(
            f"{weights}: does not match its tki.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    encoder = make_encoder(spec.encoder, model, tokenizer, device, default_cache_dir())
    if isinstance(encoder.inner, BaseModelEncoder):
        encoder.inner.bypass = adapter.bypass
    if encoder.dim != spec.dim:
        raise DeliaError(
            f"{adapter_dir}: keys have dimension {spec.dim}, encoder {spec.encoder!r} gives {encoder.dim}"
        )
    adapter.encoder = encoder
    adapter.to(device)
    adapter.attach(model, tokenizer)
    return adapter
