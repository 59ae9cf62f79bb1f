"""vLLM in-process (optional extra `vllm`, needs a GPU): the paper's own sampler."""

from __future__ import annotations

import time
from typing import Any

from delia.core.config import SamplingConfig
from delia.core.errors import DeliaError
from delia.core.models import resolve_model_dir
from delia.core.registry import BACKENDS
from delia.generation.base import BackendRequest, GenerationStats, Message

INSTALL_HINT = "pip install 'delia[vllm]' (needs a CUDA GPU), or use --backend local or --backend openai"


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as err:
        raise DeliaError(
            f"the vllm backend needs the vllm package, which is not importable ({err}); {INSTALL_HINT}"
        ) from None
    return vllm


class VllmBackend:
    name = "vllm"

    def __init__(self, model_spec: str, gpu_memory_utilization: float = 0.9, **engine_options: Any) -> None:
        vllm = import_vllm()
        self.llm = vllm.LLM(
            model=resolve_model_dir(model_spec),
            gpu_memory_utilization=gpu_memory_utilization,
            **engine_options,
        )
        self._sampling_params = vllm.SamplingParams
        self.stats = GenerationStats()
        self.last_new_tokens: list[int] = []

    def generate(
        self, prompts: list[list[Message]], sampling: SamplingConfig, seeds: list[int] | None = None
    ) -> list[str]:
        """`seeds`: one per prompt (vLLM takes a SamplingParams per prompt)."""
        params = [
            self._sampling_params(
                temperature=sampling.temperature,
                top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                max_tokens=sampling.max_new_tokens,
                seed=seed,
            )
            for seed in (seeds if seeds is not None else [sampling.seed] * len(prompts))
        ]
        start = time.perf_counter()
        outputs = self.llm.chat(prompts, params, use_tqdm=True)
        self.last_new_tokens = [len(out.outputs[0].token_ids) for out in outputs]
        self.stats.add_call(self.last_new_tokens, start)
        return [out.outputs[0].text.strip() for out in outputs]


@BACKENDS.register("vllm")
def vllm_backend(request: BackendRequest) -> VllmBackend:
    """vLLM loads its own copy of the weights on the GPU: a loaded model is not reused."""
    return VllmBackend(request.model_spec)
