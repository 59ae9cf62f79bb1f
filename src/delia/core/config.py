"""One config schema for YAML, CLI flags (`--set a.b=c`) and Python. Defaults are the paper's.

Every section forbids unknown keys, so a typo is an error naming the field instead of a silent default.
`stage_hash` gives each pipeline stage a key from exactly the config sections it reads.
A method's options are its own `Options` section (declared in its module, not here): a top-level key naming
a registered method is validated as that method's Options, through the registry.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails

from delia.core.config_errors import blamed_override, explain, split_override
from delia.core.errors import ConfigError
from delia.core.models import EMBEDDED
from delia.core.paths import relocate_config_paths, resolve_config_paths
from delia.core.registry import METHODS
from delia.core.secrets import redact_key_names

KEYING = {"purpose": "cache key"}  # model_dump(context=KEYING): the dump that stage hashes and cell keys read


class Section(BaseModel):
    # coerce_numbers_to_str: `--set name=2024` parses 2024 as a YAML int; a str field should still take it.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)
    # Fields added after runs were cached: left out of the dump while at their default, so that adding one
    # keeps the section's dump, and so every stage hash and config.yaml made before it, as they were.
    omit_at_default: ClassVar[tuple[str, ...]] = ()
    # How a stage runs, not what it makes: a KEYING dump reads them as defaults (stage hashes, cell keys).
    keyed_as_default: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _dump_without_new_defaults(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        dumped = handler(self)
        for name in self.omit_at_default:
            if getattr(self, name) == type(self).model_fields[name].default:
                dumped.pop(name, None)
        for name in self.keyed_as_default if info.context == KEYING else ():
            dumped[name] = type(self).model_fields[name].default
        return dumped


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
    concurrency: int = Field(4, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    batch_size: int = Field(16, ge=1)

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
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(256, ge=1)
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
    k: int = Field(4, ge=1)  # rewrites per task example
    axes: list[str] = Field(default_factory=lambda: list(DEFAULT_AXES))
    keep_tokens: list[str] = Field(default_factory=lambda: ["<sep>"])
    instruction_field: str | None = None  # meta key holding the instruction part
    separator: str | None = "\n\n"  # the instruction is the text after the last separator...
    regex: str | None = None  # ...or the first group of this regex
    min_similarity: float = Field(0.6, ge=0, le=1)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.9, max_new_tokens=160)
    )
    keep_originals: bool = False  # True: each original beside its rewrites (else the rewrites replace it)
    omit_at_default: ClassVar[tuple[str, ...]] = ("keep_originals",)


class TokensConfig(Section):
    add: list[str] = Field(default_factory=lambda: ["<sep>"])
    init: Literal["random", "mean", "desc_mean", "hf"] = "random"
    description: str | None = None  # for desc_mean
    trainable: bool = True


class MixConfig(Section):
    schedule: Literal["shuffle", "interleave", "two_stage", "task_only", "diverse_only"] = "shuffle"
    ratio: float = 10.0
    two_stage_order: Literal["task_first", "diverse_first"] = "task_first"
    seed: int = 0
    # two_stage, task first: the share of the task examples shuffled back into the general stage (DMT's k).
    two_stage_remix: float = Field(0.0, ge=0, le=1)
    omit_at_default: ClassVar[tuple[str, ...]] = ("two_stage_remix",)

    @field_validator("ratio")
    @classmethod
    def _positive(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"ratio must be a finite number >= 0, got {value}")
        return value


class LoraConfig(Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)  # PEFT's and torchtune's default; on CPU masks cost 1/5 of a step
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class TrainConfig(Section):
    lr: float = Field(2e-4, gt=0)
    epochs: float = Field(1.0, gt=0)  # a float: 0.5 trains on half the examples once
    # None: the paper's 64, or 16 below 256 training examples. Not required to be a multiple of
    # micro_batch_size: the trainer weights a short last micro-batch by its label tokens.
    batch_size: int | None = Field(None, ge=1)
    micro_batch_size: int = Field(8, ge=1)  # gradient accumulation reaches batch_size
    max_length: int = Field(1024, ge=1)
    max_steps: int | None = Field(None, ge=1)  # overrides epochs (common_it_matched sets it)
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)  # clip like transformers' Trainer; None: no clipping
    autocast: Literal["auto", "bf16", "none"] = "auto"
    group_by_length: bool = True
    packing: bool = True  # each micro-batch as one padding-free row, attention kept per sequence
    compile: bool = False  # torch.compile the decoder layers: faster steps after a one-off compile
    # recompute each decoder layer's activations in backward: far less memory, more compute per step
    gradient_checkpointing: bool = False
    seed: int = 0
    checkpoint_every: int = Field(0, ge=0)  # optimizer steps; 0: only at the end
    eval_every: int = Field(0, ge=0)  # held-out task loss every N steps; 0: never
    eval_examples: int = Field(16, ge=0)
    tensorboard: bool = False
    threads: int | None = Field(None, ge=1)
    omit_at_default: ClassVar[tuple[str, ...]] = ("gradient_checkpointing",)
    keyed_as_default: ClassVar[tuple[str, ...]] = ("checkpoint_every", "tensorboard")  # resume is exact


class EvalConfig(Section):
    file: str | None = None
    format: str = "auto"
    builder: str | None = None  # same builders as the task: turn raw records into eval examples
    builder_options: dict[str, Any] = Field(default_factory=dict)
    limit: int | None = None
    metric: Literal["json_format", "translation", "exact"] = "json_format"
    keys: list[str] = Field(default_factory=lambda: ["thought", "hallucination"])
    label_key: str | None = "hallucination"
    # "auto": 2x the longest eval reference or task answer, in the model's tokens (at least 16),
    # resolved by the eval stage and recorded in its manifest and metrics.json.
    max_new_tokens: int | Literal["auto"] = 256
    batch_size: int = Field(16, ge=1)
    do_sample: bool = False
    bootstrap: int = Field(1000, ge=0)
    bleurt_checkpoint: str | None = None  # a local BLEURT checkpoint: translation also reports BLEURT
    comet_checkpoint: str | None = None  # a local COMET checkpoint: translation also reports COMET
    allow_pickle: bool = False  # load a BLEURT/COMET checkpoint that has no safetensors (pickle: runs code)
    omit_at_default: ClassVar[tuple[str, ...]] = ("allow_pickle",)

    @field_validator("max_new_tokens", mode="before")
    @classmethod
    def _positive_or_auto(cls, value: Any) -> Any:
        # Checked before the union, so a bad value gets one message rather than one per member of the union.
        number = str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
        if value != "auto" and not (number.isdigit() and int(number) >= 1):
            raise ValueError(f"must be a whole number >= 1 or 'auto', got {value!r}")
        return value if value == "auto" else int(number)


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
    matched_to: str | None = None  # common_it_matched: the run directory whose optimizer steps to match
    # Each registered method's Options (`<method>:` in YAML), validated with the rest; read with options().
    _method_options: dict[str, Section] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _validate_method_options(cls, data: Any, handler: ModelWrapValidatorHandler[RunConfig]) -> RunConfig:
        if not isinstance(data, dict):
            return handler(data)
        models = method_option_models()
        config = handler({key: value for key, value in data.items() if key not in models})
        config._method_options = {
            name: _validated_options(name, model, data.get(name, {})) for name, model in models.items()
        }
        return config

    @model_serializer(mode="wrap")
    def _dump_with_method_options(
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ) -> dict[str, Any]:
        dumped = handler(self)
        options = {name: value.model_dump(mode=info.mode) for name, value in self._method_options.items()}
        return {**dumped, **options}

    def options(self, name: str) -> Section:
        """The validated options of the method `name` (its defaults where the config gives none)."""
        if name not in self._method_options:
            raise ConfigError(name, "no registered method has options under this name")
        return self._method_options[name]

    def stage_hash(self, *sections: str, upstream: tuple[str, ...] = ()) -> str:
        """A short key for a stage: the named sections' values plus the hashes of the stages it reads."""
        payload = {name: self._section_value(name) for name in sections}
        payload["_upstream"] = list(upstream)
        blob = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def _section_value(self, name: str) -> Any:
        section = self._method_options[name] if name in self._method_options else getattr(self, name)
        return section.model_dump(mode="json", context=KEYING) if isinstance(section, BaseModel) else section

    def method_sections(self) -> tuple[str, ...]:
        """The current method's own option section (e.g. `tki`), when it has one: stages that run the
        method's code (train hooks, eval) hash it."""
        return (self.method,) if self.method in self._method_options else ()

    def to_yaml(self, directory: str | Path | None = None) -> str:
        """`directory`: where the YAML goes; relative paths are rewritten to name the same files from it."""
        dumped = redact_key_names(self.model_dump(mode="json"))  # a pasted API key is never written
        return yaml.safe_dump(relocate_config_paths(dumped, directory), sort_keys=False)


def method_option_models() -> dict[str, type[Section]]:
    """Method name -> its Options model, for every registered method that declares one."""
    return {name: method.Options for name, method in METHODS.items() if method.Options is not None}


def _validated_options(name: str, model: type[Section], value: Any) -> Section:
    """`value` as the method's Options; a problem is raised located under the method's key (`tki.groups`)."""
    try:
        return model.model_validate(value)
    except ValidationError as err:
        located = [
            InitErrorDetails(type=e["type"], loc=(name, *e["loc"]), input=e["input"], ctx=e.get("ctx", {}))
            for e in err.errors()
        ]
        raise ValidationError.from_exception_data(RunConfig.__name__, located) from None


def parse_overrides(overrides: list[str], where: str = "--set") -> dict[str, Any]:
    """`a.b=c` strings -> a nested dict; values are parsed as YAML scalars (2 -> int, [a,b] -> list).
    `where` names the list in errors: the CLI flag, or an experiment file's `set:` key."""
    tree: dict[str, Any] = {}
    for item in overrides:
        parts, raw = split_override(item, [*RunConfig.model_fields, *method_option_models()], where)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = tree
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
    dotted field (under `prefix`, with the `source` in brackets), explained by delia.core.config_errors."""
    first = err.errors()[0]
    parts = [*(prefix.split(".") if prefix else []), *(str(p) for p in first["loc"])]
    field = ".".join(parts)
    message = explain(first, parts, unknown, RunConfig, method_option_models())
    where = field or "(root)"
    return ConfigError(f"{where} ({source})" if source else where, message)


def build_config(data: dict[str, Any], source: str = "config", overrides: Sequence[str] = ()) -> RunConfig:
    """Validate a dict as a RunConfig; the first problem is raised as a ConfigError naming its field."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise config_error(err, source=blamed_override(err.errors()[0]["loc"], overrides) or source) from None


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
        data = resolve_config_paths(data, path.parent)  # the file's relative paths: beside it (core/paths.py)
    data = deep_merge(data, parse_overrides(overrides or []))
    return build_config(data, source, overrides or ())
