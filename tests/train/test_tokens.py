"""delia.train.tokens: adding special tokens and initialising their rows."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from conftest import tiny_llama

from delia.core.config import TokensConfig
from delia.core.errors import DeliaError
from delia.train.tokens import add_special_tokens

DESCRIPTION = "a dictionary with a thought and a hallucination label"


@pytest.fixture()
def fresh_tokenizer(tokenizer: Any) -> Any:
    return copy.deepcopy(tokenizer)


def embedding(model: Any) -> torch.Tensor:
    return model.get_input_embeddings().weight.detach()


def test_desc_mean_row_is_the_mean_of_the_description_rows(fresh_tokenizer: Any) -> None:
    model = tiny_llama(len(fresh_tokenizer))
    before = embedding(model).clone()
    desc_ids = fresh_tokenizer(DESCRIPTION, add_special_tokens=False)["input_ids"]
    ids = add_special_tokens(model, fresh_tokenizer, TokensConfig(init="desc_mean", description=DESCRIPTION))
    assert ids == [fresh_tokenizer.convert_tokens_to_ids("<sep>")] == [len(before)]
    assert torch.allclose(embedding(model)[ids[0]], before[desc_ids].mean(dim=0), atol=1e-6)
    assert torch.equal(embedding(model)[: len(before)], before)  # existing rows untouched
    # tied model: the output head reads the same row
    assert model.get_output_embeddings().weight.data_ptr() == embedding(model).data_ptr()


def test_new_token_is_special_and_not_split(fresh_tokenizer: Any) -> None:
    model = tiny_llama(len(fresh_tokenizer))
    (sep,) = add_special_tokens(model, fresh_tokenizer, TokensConfig())
    assert "<sep>" in fresh_tokenizer.all_special_tokens
    assert sep in fresh_tokenizer("answer in <sep> format")["input_ids"]
    assert model.config.vocab_size == len(fresh_tokenizer)


def test_random_init_is_seeded_and_scaled_to_the_matrix(fresh_tokenizer: Any) -> None:
    rows = []
    for seed in (3, 3, 4):
        tok = copy.deepcopy(fresh_tokenizer)
        model = tiny_llama(len(tok))
        std = embedding(model).std()
        (sep,) = add_special_tokens(model, tok, TokensConfig(init="random"), seed=seed)
        rows.append(embedding(model)[sep].clone())
        expected = torch.randn(1, rows[-1].shape[0], generator=torch.Generator().manual_seed(seed))[0] * std
        assert torch.allclose(rows[-1], expected, atol=1e-6)
    assert torch.equal(rows[0], rows[1])
    assert not torch.equal(rows[0], rows[2])


def test_mean_init(fresh_tokenizer: Any) -> None:
    model = tiny_llama(len(fresh_tokenizer))
    before = embedding(model).clone()
    ids = add_special_tokens(model, fresh_tokenizer, TokensConfig(add=["<sep>", "<fmt>"], init="mean"))
    assert len(ids) == 2
    for i in ids:
        assert torch.allclose(embedding(model)[i], before.mean(dim=0), atol=1e-6)


def test_untied_output_rows_are_initialised_too(fresh_tokenizer: Any) -> None:
    model = tiny_llama(len(fresh_tokenizer), tie=False)
    head_before = model.get_output_embeddings().weight.detach().clone()
    embed_before = embedding(model).clone()
    desc_ids = fresh_tokenizer(DESCRIPTION, add_special_tokens=False)["input_ids"]
    (sep,) = add_special_tokens(
        model, fresh_tokenizer, TokensConfig(init="desc_mean", description=DESCRIPTION)
    )
    head = model.get_output_embeddings().weight.detach()
    assert head.data_ptr() != embedding(model).data_ptr()
    assert torch.allclose(head[sep], head_before[desc_ids].mean(dim=0), atol=1e-6)
    assert torch.allclose(embedding(model)[sep], embed_before[desc_ids].mean(dim=0), atol=1e-6)


def test_hf_init_samples_near_the_mean(fresh_tokenizer: Any) -> None:
    model = tiny_llama(len(fresh_tokenizer))
    before = embedding(model).clone()
    (sep,) = add_special_tokens(model, fresh_tokenizer, TokensConfig(init="hf"))
    row = embedding(model)[sep]
    assert torch.isfinite(row).all()
    assert torch.allclose(row, before.mean(dim=0), atol=1e-3)  # covariance scaled by 1e-9


def test_existing_tokens_are_skipped(fresh_tokenizer: Any) -> None:
    model = tiny_llama(len(fresh_tokenizer))
    rows = embedding(model).shape[0]
    assert add_special_tokens(model, fresh_tokenizer, TokensConfig(add=["<|im_end|>"])) == []
    assert embedding(model).shape[0] == rows


def test_padded_vocabulary_writes_rows_by_id_and_never_shrinks(fresh_tokenizer: Any) -> None:
    padded_rows = len(fresh_tokenizer) + 64
    model = tiny_llama(padded_rows)
    before = embedding(model).clone()
    (sep,) = add_special_tokens(model, fresh_tokenizer, TokensConfig(init="mean"))
    assert embedding(model).shape[0] == padded_rows
    assert sep == len(fresh_tokenizer) - 1 < padded_rows - 1
    known = before[:sep]
    assert torch.allclose(embedding(model)[sep], known.mean(dim=0), atol=1e-6)
    assert torch.equal(embedding(model)[sep + 1 :], before[sep + 1 :])


def test_desc_mean_without_description_is_a_user_error(fresh_tokenizer: Any) -> None:
    model = tiny_llama(len(fresh_tokenizer))
    with pytest.raises(DeliaError, match="description"):
        add_special_tokens(model, fresh_tokenizer, TokensConfig(init="desc_mean"))
