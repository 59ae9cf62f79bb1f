"""Where training runs: one process on `config.model.device`, or one rank of an `accelerate launch`."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch

from delia.core.errors import DeliaError
from delia.core.models import pick_device
from delia.train.sharding import shard_model

UNSUPPORTED = ("DEEPSPEED", "MEGATRON_LM", "XLA")


@dataclass
class Runtime:
    device: str
    rank: int = 0
    world: int = 1
    accelerator: Any = None
    sharded: bool = False  # FSDP2: parameters, gradients and optimizer state split across the ranks

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def create(cls, device: str) -> Runtime:
        """Single process (the main path) unless launched with several processes by accelerate/torchrun."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls(device=pick_device(device))
        from accelerate import Accelerator

        accelerator = Accelerator(cpu=pick_device(device) == "cpu")
        kind = accelerator.distributed_type.value
        if kind in UNSUPPORTED:
            # The loop runs backward and the optimizer step itself; DeepSpeed's engine must own both.
            raise DeliaError(
                f"delia train runs under accelerate with DDP or FSDP; {kind} is not supported. For sharded "
                "training use configs/accelerate/fsdp.yaml (docs/scale-out.md)"
            )
        # On a CPU, accelerate reports MULTI_CPU even for an FSDP config; the launcher's variable says FSDP.
        sharded = kind == "FSDP" or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
        return cls(
            str(accelerator.device),
            accelerator.process_index,
            accelerator.num_processes,
            accelerator,
            sharded,
        )

    def prepare(self, module: torch.nn.Module, bf16: bool = False) -> torch.nn.Module:
        """DDP- or FSDP-wrap the loss module; build the optimizer afterwards (FSDP replaces parameters)."""
        if self.accelerator is None:
            return module
        if self.sharded:
            return shard_model(module, self.device, self.world, bf16)
        return self.accelerator.prepare(module)

    def no_sync(self, module: torch.nn.Module, skip: bool) -> Any:
        """Skip DDP's gradient all-reduce on every micro-batch but the step's last."""
        if self.accelerator is None or not skip or self.sharded:  # FSDP reduce-scatters every backward
            return contextlib.nullcontext()
        return self.accelerator.no_sync(module)

    def sum(self, values: list[float]) -> list[float]:
        if self.accelerator is None:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        return self.accelerator.reduce(tensor, reduction="sum").tolist()

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
