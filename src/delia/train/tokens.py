"""Add special tokens (e.g. DELIA's `<sep>`) to a model and initialise their embedding rows.

Rows are written by explicit token id after the resize: vocabularies padded past the tokenizer's length
(embedding rows > len(tokenizer)) put new ids inside the padding, not at the end of the matrix, and tools
that assume "new rows are the last rows" write the wrong rows there.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import torch

from delia.core.config import TokensConfig
from delia.core.errors import DeliaError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def add_special_tokens(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: TokensConfig, *, seed: int = 0
) -> list[int]:
    """Add `cfg.add` as additional special tokens, resize, initialise the new rows; return the new ids."""
    new_tokens = [token for token in dict.fromkeys(cfg.add) if token not in tokenizer.get_vocab()]
    if not new_tokens:
        return []
    if cfg.init == "desc_mean" and not (cfg.description or "").strip():
        raise DeliaError(
            "tokens.init is desc_mean but tokens.description is empty: give a description to average"
        )
    n_known = min(len(tokenizer), model.get_input_embeddings().weight.shape[0])
    _register_special(tokenizer, new_tokens)
    new_ids = [tokenizer.convert_tokens_to_ids(token) for token in new_tokens]
    resized = _resize(model, len(tokenizer), mean_resizing=cfg.init == "hf", seed=seed)
    if cfg.init == "hf" and resized:
        return new_ids  # transformers already sampled the new rows from the old rows' mean and covariance
    desc_ids = _description_ids(tokenizer, cfg.description, set(new_ids)) if cfg.init == "desc_mean" else []
    for weight in _embedding_matrices(model):
        rows = _initial_rows(weight[:n_known].detach().float(), len(new_ids), cfg.init, desc_ids, seed)
        with torch.no_grad():
            weight[torch.tensor(new_ids, device=weight.device)] = rows.to(weight.dtype).to(weight.device)
    return new_ids


def _register_special(tokenizer: PreTrainedTokenizerBase, tokens: list[str]) -> None:
    # transformers 5 renamed "additional_special_tokens" to "extra_special_tokens"; accept both versions.
    if "replace_extra_special_tokens" in inspect.signature(tokenizer.add_special_tokens).parameters:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": tokens}, replace_extra_special_tokens=False
        )
    else:
        tokenizer.add_special_tokens(
            {"additional_special_tokens": tokens}, replace_additional_special_tokens=False
        )


def _resize(model: PreTrainedModel, n_tokens: int, *, mean_resizing: bool, seed: int) -> bool:
    """Grow the embeddings to `n_tokens` rows, never shrink a padded matrix; True when rows were added."""
    if n_tokens <= model.get_input_embeddings().weight.shape[0]:
        return False
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # hf's mean/covariance sampling draws from the global generator
        model.resize_token_embeddings(n_tokens, mean_resizing=mean_resizing)
    return True


def _embedding_matrices(model: PreTrainedModel) -> list[torch.Tensor]:
    """The input embedding, plus the output projection when it is a separate (untied) matrix."""
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    return matrices


def _description_ids(
    tokenizer: PreTrainedTokenizerBase, description: str | None, exclude: set[int]
) -> list[int]:
    ids = [i for i in tokenizer(description or "", add_special_tokens=False)["input_ids"] if i not in exclude]
    if not ids:
        raise DeliaError(
            f"tokens.description {description!r} has no tokens other than the new ones to average"
        )
    return ids


def _initial_rows(
    known: torch.Tensor, n_rows: int, init: str, desc_ids: list[int], seed: int
) -> torch.Tensor:
    """Rows for the new tokens from the matrix's known rows (float32, shape n_rows x hidden)."""
    if init == "random":
        generator = torch.Generator().manual_seed(seed)
        return torch.randn(n_rows, known.shape[1], generator=generator) * known.std()
    if init == "mean":
        return known.mean(dim=0).expand(n_rows, -1).clone()
    if init == "desc_mean":
        return known[desc_ids].mean(dim=0).expand(n_rows, -1).clone()
    if init == "hf":
        return _mean_covariance_sample(known, n_rows, seed)
    raise DeliaError(f"unknown tokens.init {init!r}; choose random, mean, desc_mean or hf")


def _mean_covariance_sample(known: torch.Tensor, n_rows: int, seed: int) -> torch.Tensor:
    """transformers' mean_resizing formula, for ids that fall inside a padded matrix (no resize happened)."""
    mean = known.mean(dim=0)
    centred = known - mean
    covariance = centred.T @ centred / known.shape[0]
    try:
        distribution = torch.distributions.MultivariateNormal(mean, covariance_matrix=1e-9 * covariance)
    except ValueError:  # not positive definite: transformers falls back to the mean too
        return mean.expand(n_rows, -1).clone()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return distribution.sample((n_rows,))
