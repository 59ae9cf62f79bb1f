"""FSDP2 for `delia train` under `accelerate launch` with an FSDP config: shard, gather, restore.

torch's `fully_shard` is applied here rather than through `accelerator.prepare`, because accelerate 1.15 runs
FSDP only on accelerators: on a CPU it silently falls back to DDP, and the sharded path could not be tested
in CI. One code path for CPU (gloo) and GPU (NCCL): each decoder layer is its own FSDP unit, and the loss
module is the root, since the loss calls the decoder and the head directly rather than the model's forward.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from delia.core.errors import DeliaError


def shard_model(loss_module: torch.nn.Module, device: str, world: int, bf16: bool) -> torch.nn.Module:
    """Shard every decoder layer and then the rest (embeddings, norm, head) across `world` ranks, in place."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(torch.device(device).type, (world,))
    # bf16 compute with fp32 master weights and fp32 gradient reduction; otherwise the weights' own dtype.
    policy = MixedPrecisionPolicy(torch.bfloat16, torch.float32) if bf16 else MixedPrecisionPolicy()
    for layer in decoder_layers(loss_module):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(loss_module, mesh=mesh, mp_policy=policy)
    return loss_module


def decoder_layers(module: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks, by the class names transformers itself keeps whole (`_no_split_modules`)."""
    names: set[str] = set()
    for sub in module.modules():
        names.update(getattr(sub, "_no_split_modules", None) or [])
    layers = [sub for sub in module.modules() if type(sub).__name__ in names]
    if not layers:
        raise DeliaError("FSDP: found no decoder layers to shard (the model declares no _no_split_modules)")
    return layers


def full_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Whole tensors on the CPU, gathered from their shards. Under FSDP every rank must call it: the
    gathering is collective."""
    return {
        name: (t.full_tensor() if isinstance(t, DTensor) else t).detach().cpu().contiguous()
        for name, t in named
    }


def copy_full_tensor(target: torch.Tensor, full: torch.Tensor) -> None:
    """Put a whole tensor into a parameter, sharded the way the parameter is."""
    with torch.no_grad():
        if isinstance(target, DTensor):
            full = distribute_tensor(full.to(target.device), target.device_mesh, target.placements)
        target.copy_(full)


def optimizer_state(loss_module: torch.nn.Module, optimizer: torch.optim.Optimizer, sharded: bool) -> Any:
    """The optimizer's state, whole (collective under FSDP; rank 0 gets it, the others an empty dict)."""
    if not sharded:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(loss_module, optimizer, options=options)


def load_optimizer_state(
    loss_module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: Any, sharded: bool
) -> None:
    if not sharded:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    # Every rank read the same file, so each can cut its own shards out of the whole state.
    set_optimizer_state_dict(loss_module, optimizer, state, options=StateDictOptions(full_state_dict=True))
