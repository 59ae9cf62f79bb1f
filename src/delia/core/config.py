"""One config schema for YAML, CLI flags (`--set a.b=c`) and Python. Defaults are the paper's.

Every section forbids unknown keys, so a typo is an error naming the field instead of a silent default.
`stage_hash` gives each pipeline stage a key from exactly the config sections it reads.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from delia.core.errors import ConfigError
from delia.core.models import EMBEDDED


class Section(BaseModel):
    # coerce_numbers_to_str: `--set name=2024` parses 2024 as a YAML int; a str field should still take it.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


class ModelConfig(Section):
    name: str = EMBEDDED
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto"
    dtype: str = "float32"  # weights; compute precision is `train.autocast`
    trust_remote_code: bool = False


class TaskConfig(Section):
    train: str = ""  # task examples (any supported format)
    format: str = "auto"
    size: int | None = None  # keep the first N task examples (after a seeded shuffle), None = all
    builder: str | None = None  # "halueval" | "translation" | "demo": build the task from raw records
    builder_options: dict[str, Any] = Field(default_factory=dict)


class BackendConfig(Section):
    kind: Literal["local", "openai", "vllm"] = "local"
    model: str | None = None  # None: the model being tuned (the paper's self-sampling)
    base_url: str | None = None
    api_key_env: str | None = None  # the NAME of an environment variable, never the key itself
    concurrency: int = 4
    timeout_s: float = 120.0
    batch_size: int = 16

    @field_validator("api_key_env")
    @classmethod
    def _a_name_not_a_key(cls, value: str | None) -> str | None:
        # A key pasted here would be written into run configs and manifests: refuse it, without echoing it.
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(
                "must be the NAME of an environment variable holding the key (e.g. OPENAI_API_KEY), "
                "not the key itself"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _no_credentials_in_url(cls, value: str | None) -> str | None:
        if value is not None and "@" in value.split("://", 1)[-1].split("/", 1)[0]:
            message = "must not hold credentials (user:key@host); name the key's variable in api_key_env"
            raise ValueError(message)
        return value


class SamplingConfig(Section):
    temperature: float = 0.7
    top_p: float = 0.95
    max_new_tokens: int = 256
    seed: int = 0


class SampleConfig(Section):
    """Diverse data: queries answered by a model ("self-sampling"), or an existing file."""

    queries: str | None = None  # None: the model writes its own from built-in topics x task types
    queries_format: str = "auto"
    limit: int | None = None  # at most this many queries; None: as many as the mix needs
    data: str | None = None  # an existing diverse-data file: skip sampling
    in_context: bool = True  # one in-context turn (the query's reference answer) as in the paper's code
    backend: BackendConfig = Field(default_factory=BackendConfig)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


DEFAULT_AXES = [
    "vocabulary",
    "syntax",
    "length",
    "register",
    "persona",
    "constraint_order",
    "question_vs_command",
]


class DiversifyConfig(Section):
    enabled: bool = True
    k: int = 4  # rewrites per task example
    axes: list[str] = Field(default_factory=lambda: list(DEFAULT_AXES))
    keep_tokens: list[str] = Field(default_factory=lambda: ["<sep>"])
    instruction_field: str | None = None  # meta key holding the instruction part
    separator: str | None = "\n\n"  # the instruction is the text after the last separator...
    regex: str | None = None  # ...or the first group of this regex
    min_similarity: float = 0.6
    backend: BackendConfig = Field(default_factory=BackendConfig)
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.9, max_new_tokens=160)
    )


class TokensConfig(Section):
    add: list[str] = Field(default_factory=lambda: ["<sep>"])
    init: Literal["random", "mean", "desc_mean", "hf"] = "random"
    description: str | None = None  # for desc_mean
    trainable: bool = True


class MixConfig(Section):
    schedule: Literal["shuffle", "interleave", "two_stage", "task_only"] = "shuffle"
    ratio: float = 10.0
    two_stage_order: Literal["task_first", "diverse_first"] = "task_first"
    seed: int = 0

    @field_validator("ratio")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"ratio must be a finite number >= 0, got {value}")
        return value


class LoraConfig(Section):
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class TrainConfig(Section):
    lr: float = 2e-4
    epochs: float = 1.0
    batch_size: int | None = None  # None: the paper's 64, or 16 below 256 training examples
    micro_batch_size: int = 8  # gradient accumulation reaches batch_size
    max_length: int = 1024
    max_steps: int | None = None  # overrides epochs (common_it_matched sets it)
    warmup_ratio: float = 0.03
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0  # clip like transformers' Trainer; None: no clipping
    autocast: Literal["auto", "bf16", "none"] = "auto"
    group_by_length: bool = True
    packing: bool = True  # each micro-batch as one padding-free row, attention kept per sequence
    compile: bool = False  # torch.compile the decoder layers: faster steps after a one-off compile
    seed: int = 0
    checkpoint_every: int = 0  # optimizer steps; 0: only at the end
    eval_every: int = 0  # held-out task loss every N steps; 0: never
    eval_examples: int = 16
    tensorboard: bool = False
    threads: int | None = None


class EvalConfig(Section):
    file: str | None = None
    format: str = "auto"
    builder: str | None = None  # same builders as the task: turn raw records into eval examples
    builder_options: dict[str, Any] = Field(default_factory=dict)
    limit: int | None = None
    metric: Literal["json_format", "translation", "exact"] = "json_format"
    keys: list[str] = Field(default_factory=lambda: ["thought", "hallucination"])
    label_key: str | None = "hallucination"
    max_new_tokens: int = 256
    batch_size: int = 16
    do_sample: bool = False
    bootstrap: int = 1000
    bleurt_checkpoint: str | None = None  # a local BLEURT checkpoint: translation also reports BLEURT
    comet_checkpoint: str | None = None  # a local COMET checkpoint: translation also reports COMET


class DeliaOptions(Section):
    diverse: bool = True  # w/o extensively diverse data when False (Table 4)
    diversify: bool = True  # w/o diversified downstream data when False


class TellOptions(Section):
    anchor: str | None = None  # None: a self-generated anchor string


class IclOptions(Section):
    k: int = 3


class FactOptions(Section):
    description: str | None = None
    n_facts: int = 8
    qa_per_fact: int = 2


class CtgOptions(Section):
    description: str | None = None
    weight: float = 1.0


class TkiOptions(Section):
    lta: bool = True
    kr: bool = True
    groups: int = 16
    latents: int = 12
    top_k: int = 2
    encoder: str = "all-MiniLM-L6-v2"
    alpha: float = 1.0
    kr_steps: int = 20
    kr_lr: float = 1e-2
    kr_distance_weight: float = 0.1
    rank: int = 4  # rank of each latent increment (groups * latents of them per target linear)
    weighting: Literal["cosine", "softmax"] = "cosine"  # D_j: clamped cosine, or softmax(cos / temperature)
    temperature: float = 0.05
    inference_groups: Literal["all", "best"] = "best"  # unseen inputs: the best key's group, or all averaged
    pcgrad: bool = True  # resolve conflicts between the task loss and the KR objective (False: plain sum)


class RunConfig(Section):
    name: str = "run"
    method: str = "delia"
    run_dir: str = "runs"
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig = Field(default_factory=TaskConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    diversify: DiversifyConfig = Field(default_factory=DiversifyConfig)
    tokens: TokensConfig = Field(default_factory=TokensConfig)
    mix: MixConfig = Field(default_factory=MixConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    delia: DeliaOptions = Field(default_factory=DeliaOptions)
    tell: TellOptions = Field(default_factory=TellOptions)
    icl: IclOptions = Field(default_factory=IclOptions)
    fact_based: FactOptions = Field(default_factory=FactOptions)
    ctg: CtgOptions = Field(default_factory=CtgOptions)
    tki: TkiOptions = Field(default_factory=TkiOptions)
    matched_to: str | None = None  # common_it_matched: the run directory whose optimizer steps to match

    def stage_hash(self, *sections: str, upstream: tuple[str, ...] = ()) -> str:
        """A short key for a stage: the named sections' values plus the hashes of the stages it reads."""
        payload = {name: _dump(getattr(self, name)) for name in sections}
        payload["_upstream"] = list(upstream)
        blob = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`a.b=c` strings -> a nested dict; values are parsed as YAML scalars (2 -> int, [a,b] -> list)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "an override must look like section.key=value")
        dotted, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = tree
        parts = dotted.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def config_error(
    err: ValidationError, prefix: str = "", source: str | None = None, unknown: str = "unknown key"
) -> ConfigError:
    """The one mapping of a pydantic ValidationError to a ConfigError: its first problem, located by the
    dotted field (under `prefix`, with the `source` file in brackets), in the validator's own words."""
    first = err.errors()[0]
    parts = [*(prefix.split(".") if prefix else []), *(str(p) for p in first["loc"])]
    field = ".".join(parts)
    message = first["msg"].removeprefix("Value error, ")  # pydantic prefixes a validator's own message
    if first["type"] == "extra_forbidden":
        message = unknown
    where = field or "(root)"
    return ConfigError(f"{where} ({source})" if source else where, message)


def build_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a dict as a RunConfig; the first problem is raised as a ConfigError naming its field."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise config_error(err, source=source) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    data: dict[str, Any] = {}
    source = "overrides"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.exists():
            raise ConfigError(str(path), "config file does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(where, f"invalid YAML ({getattr(err, 'problem', err)})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(str(path), "the top level must be a mapping of sections")
        # An empty section (`train:` with nothing under it) means "all defaults", as a reader would expect.
        data = {key: value for key, value in (loaded or {}).items() if value is not None}
    data = deep_merge(data, parse_overrides(overrides or []))
    return build_config(data, source)


def effective_batch_size(config: TrainConfig, n_examples: int) -> int:
    """The paper's rule: batch 64, or 16 when the training set is below 256 examples."""
    if config.batch_size is not None:
        return config.batch_size
    return 16 if n_examples < 256 else 64
