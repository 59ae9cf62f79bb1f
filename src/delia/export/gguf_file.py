"""`--format gguf`: the merged model as one GGUF file (llama architecture, F32 or F16 tensors), written with
the `gguf` package as llama.cpp's converter writes it, so that llama.cpp and transformers' GGUF loader
(`from_pretrained(dir, gguf_file=...)`) both read it back.

What llama.cpp's layout differs in: Q and K rows are permuted per head (its rotary embedding pairs
neighbouring dimensions, transformers' pairs the two halves; transformers undoes the permutation on
load); a tied output head is no tensor at all; the tokenizer is metadata (tokens, token types, merges,
special ids, chat template) from which transformers rebuilds it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from delia.core.errors import DeliaError
from delia.core.models import packaged_gguf_path
from delia.export.source import PROBE_TEXT, Options, Source, merge

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

GGUF_NAME = "model.gguf"
GGUF_DTYPES = ("float32", "float16")
# llama.cpp's token types (gguf.TokenType)
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


def check_exportable(config: PretrainedConfig) -> None:
    """The llama architecture in its plain form is what this writer (and transformers' reader) knows."""
    if config.model_type != "llama":
        raise DeliaError(
            f"--format gguf writes the llama architecture; this model is {config.model_type!r} "
            "(export --format merged and convert it with llama.cpp's convert_hf_to_gguf.py)"
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    unsupported = {
        "rope scaling": rope.get("rope_type", rope.get("type", "default")) not in ("default", None),
        "attention bias": bool(getattr(config, "attention_bias", False)),
        "MLP bias": bool(getattr(config, "mlp_bias", False)),
        f"activation {config.hidden_act!r}": config.hidden_act != "silu",
    }
    found = [name for name, present in unsupported.items() if present]
    if found:
        raise DeliaError(f"--format gguf: this llama model has {', '.join(found)}, which it does not map")


def check_dtype(dtype: str) -> None:
    if dtype not in GGUF_DTYPES:
        raise DeliaError(f"--format gguf --dtype {dtype}: choose float32 or float16 (F32 or F16 tensors)")


def write_gguf(source: Source, out: Path, options: Options) -> None:
    """out/model.gguf and a README.md."""
    check_dtype(options.dtype)
    check_exportable(source.model.get_base_model().config)
    model = merge(source)
    path = out / GGUF_NAME
    write_gguf_file(model, source.tokenizer, path, options.dtype, source.name, pre_tokenizer(source))
    check_tokenizer_round_trip(path, source.tokenizer)
    (out / "README.md").write_text(readme(source, options.target.resolve()), encoding="utf-8")


def check_tokenizer_round_trip(path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """The tokenizer transformers rebuilds from the file's metadata must split text as the run's does (a
    pre-tokenizer the metadata cannot name would split differently): refuse the file otherwise."""
    from transformers import AutoTokenizer

    rebuilt = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    texts = [PROBE_TEXT, "  Numbers 12345, ünïcödé and\ttabs\n\nnew lines.", *tokenizer.all_special_tokens]
    for text in texts:
        ours, theirs = tokenizer(text)["input_ids"], rebuilt(text)["input_ids"]
        if ours != theirs:
            raise DeliaError(
                f"--format gguf: the tokenizer rebuilt from the GGUF splits {text!r} as {theirs[:8]}, the "
                f"run's as {ours[:8]}; nothing was exported (export --format merged instead)"
            )


def write_gguf_file(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: Path,
    dtype: str,
    name: str,
    pre: str = "default",
) -> None:
    import gguf

    rows = model.get_input_embeddings().weight.shape[0]
    writer = gguf.GGUFWriter(str(path), "llama")
    add_hyperparameters(writer, model.config, name, rows, dtype)
    add_vocabulary(writer, tokenizer, rows, pre)
    for tensor_name, array in gguf_tensors(model, dtype):
        writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def add_hyperparameters(writer: Any, config: PretrainedConfig, name: str, rows: int, dtype: str) -> None:
    import gguf

    rope = getattr(config, "rope_parameters", None) or {}
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(rows)
    file_type = gguf.LlamaFileType.ALL_F32 if dtype == "float32" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(int(file_type))


def gguf_tensors(model: PreTrainedModel, dtype: str) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, array) for each weight: llama.cpp's names and Q/K permutation, matrices in `dtype`,
    norms in float32 (as llama.cpp keeps them); no output tensor when the head is tied."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    tensors = []
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        stem, suffix = hf_name.rsplit(".", 1)
        gguf_name = names.get_name(stem)
        if gguf_name is None:
            raise DeliaError(f"--format gguf: no GGUF name for the llama weight {hf_name!r}")
        array = tensor.detach().float().cpu().numpy()
        if gguf_name.endswith(".attn_q"):
            array = permute_rows(array, config.num_attention_heads)
        elif gguf_name.endswith(".attn_k"):
            array = permute_rows(array, config.num_key_value_heads)
        if array.ndim > 1 and dtype == "float16":
            array = array.astype(np.float16)
        tensors.append((f"{gguf_name}.{suffix}", np.ascontiguousarray(array)))
    return tensors


def permute_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's Q/K row order: within each head, the two rotary halves interleaved."""
    return (
        weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def add_vocabulary(writer: Any, tokenizer: PreTrainedTokenizerBase, rows: int, pre: str) -> None:
    """The byte-level BPE tokenizer as llama.cpp's "gpt2" metadata; ids past the tokenizer up to the
    matrix's rows (a padded vocabulary) are unused placeholders."""
    tokens, types, merges = vocabulary(tokenizer, rows)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for key, token_id in special_ids(tokenizer).items():
        getattr(writer, f"add_{key}_token_id")(token_id)
    sample = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(sample) and sample[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(bool(sample) and sample[-1] == tokenizer.eos_token_id)
    writer.add_add_space_prefix(False)
    if isinstance(getattr(tokenizer, "chat_template", None), str):
        writer.add_chat_template(tokenizer.chat_template)


def vocabulary(tokenizer: PreTrainedTokenizerBase, rows: int) -> tuple[list[str], list[int], list[str]]:
    """(tokens by id, their llama.cpp types, merges "a b") from the tokenizer's tokenizer.json."""
    data = json.loads(tokenizer.backend_tokenizer.to_str())
    bpe = data.get("model") or {}
    if bpe.get("type") != "BPE" or not _has_byte_level(data):
        raise DeliaError(
            f"--format gguf writes byte-level BPE (gpt2-style) tokenizers; this one is {bpe.get('type')!r}"
        )
    size = max(rows, len(tokenizer))
    tokens: list[str | None] = [None] * size
    types = [NORMAL] * size
    for token, token_id in bpe["vocab"].items():
        tokens[token_id] = token
    for added in data.get("added_tokens", []):
        tokens[added["id"]] = added["content"]
        types[added["id"]] = CONTROL if added.get("special") else USER_DEFINED
    for token_id, token in enumerate(tokens):
        if token is None:
            tokens[token_id], types[token_id] = f"[PAD{token_id}]", UNUSED
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in bpe.get("merges", [])]
    return [str(token) for token in tokens], types, merges


def _has_byte_level(node: Any) -> bool:
    if isinstance(node, dict):
        return node.get("type") == "ByteLevel" or any(_has_byte_level(value) for value in node.values())
    if isinstance(node, list):
        return any(_has_byte_level(value) for value in node)
    return False


def special_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """bos/eos/unk/pad ids the tokenizer names, under gguf's writer names."""
    ids = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
    }
    return {key: int(value) for key, value in ids.items() if value is not None}


def pre_tokenizer(source: Source) -> str:
    """llama.cpp's pre-tokenizer name: the one of the GGUF the base was dequantised from (its tokenizer is
    that file's), else "default" (GPT-2's split)."""
    from gguf import GGUFReader

    spec = source.base_spec
    gguf_path = packaged_gguf_path(spec)
    if gguf_path is None or not gguf_path.exists():
        return "default"
    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.ggml.pre")
    return str(field.contents()) if field is not None else "default"


def readme(source: Source, target: Path) -> str:
    return f"""# {source.name}: GGUF

`{GGUF_NAME}`: the run's LoRA and its new tokens' trained rows merged into the base model, one GGUF file
(llama architecture, unquantised). Written by `delia export --format gguf`.

- transformers: `AutoModelForCausalLM.from_pretrained("{target}", gguf_file="{GGUF_NAME}")` (and the
  same for `AutoTokenizer`); serve it with `transformers serve {target}:{GGUF_NAME}`.
- llama.cpp: `llama-server -m {target}/{GGUF_NAME}`; quantise it with `llama-quantize` if wanted.
"""
