"""Latent task adaptation: groups x latents LoRA increments, mixed per example by retrieval weights.

For every target linear W, the forward becomes y = W x (+ the task LoRA) + s * sum_j w_{b,j} B_j A_j x,
with w_{b,j} the normalised retrieval weights of example b (zero outside its top-k). It is computed
batched: the k selected (A_j, B_j) of each example are gathered and applied with two batched matmuls, so one
forward serves examples that use different latent tasks.

Wiring is by hooks, not module replacement, so PEFT's own adapter (the task LoRA), its state-dict names
and its save/load stay untouched: a forward pre-hook on the transformer body computes the routing from
the token ids, and a forward hook on each target linear adds the increment.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from delia.core.models import unwrapped
from delia.methods.tki.routing import (
    NO_GROUP,
    InferenceGroups,
    Routing,
    UserTurnExtractor,
    Weighting,
    orthogonal_keys,
    retrieve,
)
from delia.methods.tki.segments import Segments, find_segments

ATTRIBUTE = "tki_latents"  # where the adapter sits on the transformers model (never contains "lora_")


@dataclass
class LatentSpec:
    """Everything needed to rebuild the latent adapter's shapes and behaviour (saved with the artefact)."""

    groups: int
    latents: int
    top_k: int
    rank: int
    scaling: float
    dropout: float
    dim: int  # encoder dimension = key dimension
    encoder: str  # the encoder actually used (the cache and the saved artefact name it)
    weighting: Weighting = "cosine"
    temperature: float = 0.05
    inference_groups: InferenceGroups = "best"
    seed: int = 0
    targets: dict[str, list[int]] = field(default_factory=dict)  # module name -> [in_features, out_features]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class LatentBank(nn.Module):
    """The groups * latents increments of one linear layer: down[j] = A_j (rank x in) and up[j] = B_j^T
    (rank x out, stored transposed so a gathered selection is one contiguous (K*rank, out) matrix)."""

    def __init__(
        self, n_latents: int, in_features: int, out_features: int, rank: int, scaling: float
    ) -> None:
        super().__init__()
        self.scaling = scaling
        # The init, the reverse of LoRA's: A = 0 keeps the start at the base model, and since B != 0
        # the gradient reaches A at once (dL/dA = B^T g x^T); B starts moving once A x is non-zero.
        self.down = nn.Parameter(torch.zeros(n_latents, rank, in_features))
        self.up = nn.Parameter(torch.randn(n_latents, rank, out_features) / rank)

    def forward(self, x: torch.Tensor, routing: Routing) -> torch.Tensor:
        """x (batch, ..., in) -> sum_k w_{b,k} * scaling * B_k A_k x, with row b's own K latents."""
        down, up = self._selection(routing)
        flat = x.reshape(down.shape[0], -1, x.shape[-1]).to(down.dtype)  # (batch, tokens, in)
        delta = torch.bmm(torch.bmm(flat, down.transpose(1, 2)), up)
        return delta.reshape(*x.shape[:-1], delta.shape[-1])

    def _selection(self, routing: Routing) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's gathered A (batch, K*rank, in) and weighted B^T (batch, K*rank, out).

        Without autograd (generation) the selection is kept while the routing object is the same, so the
        decoding steps after a prefill do not gather again.
        """
        cached = getattr(self, "_cached", None)
        if cached is not None and cached[0] is routing and not torch.is_grad_enabled():
            return cached[1], cached[2]
        batch, k = routing.index.shape
        rank = self.down.shape[1]
        down = self.down[routing.index].reshape(batch, k * rank, -1)
        weight = (routing.weight * self.scaling).to(self.up.dtype).repeat_interleave(rank, dim=1)
        up = self.up[routing.index].reshape(batch, k * rank, -1) * weight.unsqueeze(-1)
        self._cached = None if torch.is_grad_enabled() else (routing, down, up)
        return down, up


class LatentAdapter(nn.Module):
    """Keys, banks and the live routing; `attach` wires it into a model.

    Keys and the centre stay float32 on the CPU, outside the module's buffers, so a bf16 copy of the model
    (the local backend's generation copy) retrieves exactly as training did. A deep copy of the model
    carries a working adapter of its own: hooks are objects bound to the adapter, not closures.
    """

    def __init__(self, spec: LatentSpec) -> None:
        super().__init__()
        self.spec = spec
        n_latents = spec.groups * spec.latents
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(spec.seed)
        try:
            self.banks = nn.ModuleDict(
                {
                    _key(name): LatentBank(n_latents, shape[0], shape[1], spec.rank, spec.scaling)
                    for name, shape in spec.targets.items()
                }
            )
        finally:
            torch.random.set_rng_state(generator_state)
        self.keys = orthogonal_keys(spec.groups, spec.latents, spec.dim, spec.seed)
        self.center = torch.zeros(spec.dim)  # training-mean encoding, subtracted before retrieval
        self.group_of: dict[str, int] = {}  # training input text -> its group
        self.encoder: Any = None
        self.extractor: UserTurnExtractor | None = None
        self.current: Routing | None = None
        self.active = True
        self.unknown_in_training = 0  # training inputs routed like unseen ones (text not in group_of)
        self._handles = _Handles()

    # ---------------------------------------------------------------------------------------- state

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything the saved artefact holds: banks, keys, centre."""
        return {**self.state_dict(), "keys": self.keys, "center": self.center}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
        """Load `tensors()` output; returns (missing, unexpected) names."""
        rest = dict(tensors)
        missing = [name for name in ("keys", "center") if name not in rest]
        if not missing:
            self.keys = rest.pop("keys").float().cpu()
            self.center = rest.pop("center").float().cpu()
        result = self.load_state_dict(rest, strict=False)
        return [*missing, *result.missing_keys], list(result.unexpected_keys)

    # ---------------------------------------------------------------------------------------- routing

    def route_texts(self, texts: list[str], groups: list[int], device: Any = None) -> Routing:
        embeddings = self.encoder.encode(texts).float().cpu() - self.center
        routing = retrieve(
            embeddings,
            self.keys,
            torch.tensor(groups, dtype=torch.long),
            self.spec.top_k,
            self.spec.weighting,
            self.spec.temperature,
            self.spec.inference_groups,
        )
        if device is None:
            device = next(self.parameters()).device
        return Routing(routing.index.to(device), routing.weight.to(device))

    def route_ids(self, input_ids: torch.Tensor, segments: Segments, training: bool) -> Routing:
        """Routing for every example (segment) in a batch of token ids, padded or packed."""
        assert self.extractor is not None, "attach() the adapter before routing"
        texts = [self.extractor.text(tokens) for tokens in segments.token_lists(input_ids)]
        groups = [self.group_of.get(text, NO_GROUP) if training else NO_GROUP for text in texts]
        if training:
            self.unknown_in_training += sum(g == NO_GROUP for g in groups)
        routing = self.route_texts(texts, groups, input_ids.device)
        routing.segments = segments
        return routing

    @contextlib.contextmanager
    def bypass(self) -> Iterator[None]:
        """Neither route nor add increments inside (the base-model encoder runs the model itself)."""
        previous = self.active
        self.active = False
        try:
            yield
        finally:
            self.active = previous

    # ---------------------------------------------------------------------------------------- wiring

    def attach(self, model: Any, tokenizer: Any) -> None:
        """Register on the transformers model (so its parameters train and move with it) and hook in."""
        inner = unwrapped(model)
        setattr(inner, ATTRIBUTE, self)
        self.extractor = UserTurnExtractor(tokenizer)
        modules = dict(inner.named_modules())
        for name in self.spec.targets:
            self._handles.append(modules[name].register_forward_hook(_DeltaHook(self, _key(name))))
        self._handles.append(inner.base_model.register_forward_pre_hook(self._route_hook, with_kwargs=True))

    def detach(self, model: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        inner = unwrapped(model)
        if getattr(inner, ATTRIBUTE, None) is self:
            delattr(inner, ATTRIBUTE)

    def _route_hook(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not self.active:
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids is None:  # embeddings fed directly (reinstatement): same examples, same routing
            return
        # transformers 5.24 renamed `past_key_values` to `cache`; older releases still pass the former.
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if _cache_length(cache) > 0:  # decoding: keep the prompt's routing
            return
        segments = find_segments(
            tuple(input_ids.shape),
            kwargs.get("attention_mask"),
            kwargs.get("position_ids"),
            kwargs.get("cu_seq_lens_q"),
            device=input_ids.device,
        )
        self.current = self.route_ids(input_ids, segments, module.training)

    def add_delta(self, key: str, module: nn.Module, x: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
        """output + the routed latent increments of target `key` for input x."""
        bank = self.banks[key]
        routing = self.current
        assert routing is not None
        x = F.dropout(x, self.spec.dropout, training=module.training and self.spec.dropout > 0)
        if routing.per_row:
            return output + bank(x, routing.expand_to(x.shape[0])).to(output.dtype)
        # Packed rows: lay each example's tokens out as its own row, apply, put them back (gathers only).
        gather, valid, scatter = routing.layout()
        flat = x.reshape(-1, x.shape[-1])
        grid = flat[gather] * valid.unsqueeze(-1).to(flat.dtype)
        delta = bank(grid, routing).reshape(-1, output.shape[-1])
        delta = torch.cat([delta, delta.new_zeros(1, delta.shape[-1])])[scatter]
        return output + delta.reshape(output.shape).to(output.dtype)


class _DeltaHook:
    """Forward hook of one target linear; an object (not a closure) so deep copies rebind it."""

    def __init__(self, adapter: LatentAdapter, key: str) -> None:
        self.adapter = adapter
        self.key = key

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        if not self.adapter.active or self.adapter.current is None:
            return None
        return self.adapter.add_delta(self.key, module, args[0], output)


class _Handles(list):
    """Hook handles of one attachment; a deep copy starts with none (its hooks live in the copied model)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _Handles:
        return _Handles()


def find_targets(model: Any, target_names: list[str]) -> dict[str, list[int]]:
    """Module name -> [in, out] of every linear the latent increments go on: the PEFT LoRA layers when the
    model has them (the task LoRA and the latents share targets), else linears named in target_names."""
    inner = unwrapped(model)
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # peft is a dependency; the guard only keeps this usable without it
        LoraLayer = ()
    found = {n: m for n, m in inner.named_modules() if LoraLayer and isinstance(m, LoraLayer)}
    if not found:
        everything = target_names in (["all-linear"], "all-linear")
        found = {
            name: module
            for name, module in inner.named_modules()
            if isinstance(module, nn.Linear)
            and (name.rsplit(".", 1)[-1] in target_names or (everything and "lm_head" not in name))
        }
    return {name: [int(m.in_features), int(m.out_features)] for name, m in found.items()}


def _key(module_name: str) -> str:
    return module_name.replace(".", "__")


def _cache_length(cache: Any) -> int:
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    try:  # legacy tuple-of-tuples cache
        return int(cache[0][0].shape[-2])
    except (IndexError, TypeError, AttributeError):
        return 0
