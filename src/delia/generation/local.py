"""In-process transformers backend: batched, left-padded, KV cache, length-sorted, bf16 on CPU and GPU.

On a CPU with native bf16 (AVX512-BF16 / AMX) generation runs on a bf16 copy of the weights rather than under
autocast: autocast re-casts fp32 weights inside every decode step and measured slower than plain fp32 here,
while bf16 weights measured about 2x faster than fp32 (see bench/bench_sampling.py). The copy is refreshed
whenever a parameter of the source model changes in place (an optimizer step, a merge).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from delia.core.config import SamplingConfig
from delia.core.models import autocast, cpu_supports_bf16, load_model, load_tokenizer
from delia.core.registry import BACKENDS
from delia.generation.base import BackendRequest, GenerationStats, Message
from delia.generation.decode import ContinuousDecoder, supports
from delia.generation.stop_strings import StopStrings
from delia.generation.threads import keep_threads_current

if TYPE_CHECKING:
    from transformers import LogitsProcessorList, PreTrainedModel, PreTrainedTokenizerBase, StoppingCriteria

# (model, tokenizer) -> the logits processors for one batch (made afresh per batch: CTG's has state)
LogitsProcessorFactory = Callable[["PreTrainedModel", "PreTrainedTokenizerBase"], "LogitsProcessorList"]


def follow_free_cores() -> StoppingCriteria:
    """A stopping criterion that never stops: between decode steps it lets the installed thread policy
    re-check free cores, as one batch can decode for minutes while other jobs come and go."""
    from transformers import StoppingCriteria  # here: importing transformers costs seconds at CLI start

    class FollowFreeCores(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            keep_threads_current()
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return FollowFreeCores()


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The chat template's end-of-turn token plus eos: generation stops at either."""
    ids = {tokenizer.eos_token_id}
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id is not None:
            ids.add(token_id)
    return sorted(i for i in ids if i is not None)


class LocalBackend:
    name = "local"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int = 16,
        autocast_mode: str = "auto",
        progress: bool = True,
        logits_processor_factory: LogitsProcessorFactory | None = None,
        cpu_bf16_weights: bool = True,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.autocast_mode = autocast_mode
        self.progress = progress
        self.stats = GenerationStats()
        self.stop_ids = stop_token_ids(tokenizer)
        self.last_new_tokens: list[int] = []  # new tokens per prompt of the last generate(), in prompt order
        self.logits_processor_factory = logits_processor_factory
        self.cpu_bf16_weights = cpu_bf16_weights
        self._bf16_copy: PreTrainedModel | None = None
        self._bf16_fingerprint: tuple[int, int] | None = None
        self.stop_strings: list[str] = []  # extra stops (e.g. "\n\n" for one-paragraph answers)

    @classmethod
    def from_spec(cls, spec: str, device: str = "cpu", dtype: str = "float32", **kwargs: Any) -> LocalBackend:
        return cls(load_model(spec, device=device, dtype=dtype), load_tokenizer(spec), **kwargs)

    def render(self, prompt: list[Message]) -> str:
        return self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)

    def generate(
        self, prompts: list[list[Message]], sampling: SamplingConfig, seeds: list[int] | None = None
    ) -> list[str]:
        """`seeds`: one per prompt, so each prompt's sample is the same whatever batch it lands in."""
        texts = [self.render(p) for p in prompts]
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        # Longest first: similar lengths share a batch (less padding), and memory peaks early.
        order = sorted(range(len(texts)), key=lambda i: -len(encoded[i]))
        outputs: list[str] = [""] * len(texts)
        self.last_new_tokens = [0] * len(texts)
        bar = tqdm(total=len(texts), desc="generate", unit="prompt", disable=not self.progress, leave=False)
        torch.manual_seed(sampling.seed)
        if self.continuous_batching():
            self._generate_continuous(encoded, order, sampling, seeds, outputs, bar)
        else:
            self._generate_batches(texts, order, sampling, seeds, outputs, bar)
        bar.close()
        self.stats.per_prompt_tokens.extend(self.last_new_tokens)
        return outputs

    def _generate_batches(
        self,
        texts: list[str],
        order: list[int],
        sampling: SamplingConfig,
        seeds: list[int] | None,
        outputs: list[str],
        bar: tqdm,
    ) -> None:
        """`generate` over consecutive batches of `batch_size` prompts in `order`."""
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            batch_seeds = [seeds[i] for i in batch] if seeds is not None else None
            completions, new_tokens, seconds = self._generate_batch(
                [texts[i] for i in batch], sampling, batch_seeds
            )
            for index, completion, count in zip(batch, completions, new_tokens, strict=True):
                outputs[index] = completion
                self.last_new_tokens[index] = count
            self.stats.prompts += len(batch)
            self.stats.new_tokens += sum(new_tokens)
            self.stats.seconds += seconds
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{self.stats.tokens_per_second:.0f}")

    def continuous_batching(self) -> bool:
        """Rows leave the batch when they finish and waiting prompts take their place (generation/decode.py);
        `generate` remains for what that loop does not do: extra logits processors (CTG), sliding-window
        caches, generation-config penalties."""
        if self.logits_processor_factory is not None:
            return False
        return supports(self.model)

    def _generate_continuous(
        self,
        prompts: list[list[int]],
        order: list[int],
        sampling: SamplingConfig,
        seeds: list[int] | None,
        outputs: list[str],
        bar: tqdm,
    ) -> None:
        model, precision = self.generation_model()
        decoder = ContinuousDecoder(
            model,
            self.stop_ids,
            self.tokenizer.pad_token_id,
            sampling,
            slots=self.batch_size,
            seeds=seeds,
            between_steps=keep_threads_current,
            stop_strings=StopStrings(self.tokenizer, self.stop_strings) if self.stop_strings else None,
        )
        start = time.perf_counter()

        def finished(index: int, tokens: list[int]) -> None:
            # Special tokens the user added (e.g. <sep>) must survive decoding, so decode without skipping.
            outputs[index] = self.tokenizer.decode(tokens, skip_special_tokens=False).strip()
            self.last_new_tokens[index] = len(tokens)
            self.stats.prompts += 1
            self.stats.new_tokens += len(tokens)
            bar.update(1)

        decoder.on_done = finished
        with torch.inference_mode(), precision:
            decoder.run(prompts, order)
        self.stats.seconds += time.perf_counter() - start
        bar.set_postfix(tok_s=f"{self.stats.tokens_per_second:.0f}")

    def _uses_cpu_bf16_copy(self) -> bool:
        if not self.cpu_bf16_weights or self.autocast_mode == "none" or self.model.device.type != "cpu":
            return False
        if self.model.dtype != torch.float32:
            return False
        return self.autocast_mode == "bf16" or cpu_supports_bf16()

    def _fingerprint(self) -> tuple[int, int]:
        # In-place updates bump a tensor's version counter: a changed sum means changed weights.
        return id(self.model), sum(p._version for p in self.model.parameters())

    def generation_model(self) -> tuple[PreTrainedModel, contextlib.AbstractContextManager[Any]]:
        """(the model to run, the precision context): a cached bf16 copy on bf16 CPUs, else autocast."""
        if not self._uses_cpu_bf16_copy():
            return self.model, autocast(str(self.model.device), self.autocast_mode)
        fingerprint = self._fingerprint()
        if self._bf16_copy is None or fingerprint != self._bf16_fingerprint:
            self._bf16_copy = None  # free the stale copy before making the new one
            self._bf16_copy = copy.deepcopy(self.model).to(torch.bfloat16).eval()
            self._bf16_fingerprint = fingerprint
        return self._bf16_copy, contextlib.nullcontext()

    def _generate_batch(
        self, texts: list[str], sampling: SamplingConfig, seeds: list[int] | None = None
    ) -> tuple[list[str], list[int], float]:
        self.tokenizer.padding_side = "left"
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = encoded.to(self.model.device)
        do_sample = sampling.temperature > 0
        options: dict[str, Any] = {"do_sample": do_sample}
        if do_sample:
            options.update(temperature=sampling.temperature, top_p=sampling.top_p)
        else:
            options.update(temperature=None, top_p=None, top_k=None)
        start = time.perf_counter()
        model, precision = self.generation_model()
        if self.stop_strings:
            options.update(stop_strings=list(self.stop_strings), tokenizer=self.tokenizer)
        if model.device.type == "cpu":
            from transformers import StoppingCriteriaList

            options["stopping_criteria"] = StoppingCriteriaList([follow_free_cores()])
        if self.logits_processor_factory is not None:  # given the model that generates (maybe the bf16 copy)
            options["logits_processor"] = self.logits_processor_factory(model, self.tokenizer)
        if do_sample and seeds is not None:
            from transformers import LogitsProcessorList

            from delia.generation._seeded import PerRowSampler, sampling_warpers  # imports transformers

            # `generate` runs a caller's processors BEFORE its own warpers, so the draw would ignore
            # temperature and top-p: the warpers go into the list ahead of the per-row draw.
            options["logits_processor"] = LogitsProcessorList(
                [
                    *options.get("logits_processor", []),
                    *sampling_warpers(model, sampling),
                    PerRowSampler(seeds),
                ]
            )
        with torch.inference_mode(), precision:
            generated = model.generate(
                **encoded,
                max_new_tokens=sampling.max_new_tokens,
                eos_token_id=self.stop_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                use_cache=True,
                **options,
            )
        seconds = time.perf_counter() - start
        new = generated[:, encoded["input_ids"].shape[1] :]
        completions, counts = [], []
        for row in new.tolist():
            cut = next((i for i, t in enumerate(row) if t in self.stop_ids), len(row))
            counts.append(cut)
            # Special tokens the user added (e.g. <sep>) must survive decoding, so decode without skipping.
            completions.append(self.tokenizer.decode(row[:cut], skip_special_tokens=False).strip())
        return completions, counts, seconds


@BACKENDS.register("local")
def local_backend(request: BackendRequest) -> LocalBackend:
    """Reuses the already loaded model being tuned unless the config names another one."""
    cfg, progress = request.cfg, request.progress
    if request.model is not None and request.tokenizer is not None and cfg.model is None:
        return LocalBackend(request.model, request.tokenizer, batch_size=cfg.batch_size, progress=progress)
    return LocalBackend.from_spec(
        request.model_spec,
        device=request.device,
        dtype=request.dtype,
        batch_size=cfg.batch_size,
        progress=progress,
    )
