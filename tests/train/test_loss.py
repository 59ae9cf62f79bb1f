"""The label-position loss equals transformers' full-logit loss: skipping the head elsewhere is exact."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from conftest import tiny_gemma3, tiny_llama

from delia.core.config import LoraConfig, TokensConfig
from delia.core.example import Example
from delia.train.attention import packed_attention_for
from delia.train.collate import IGNORE, encode_examples, pack, pad
from delia.train.lora import wrap_lora
from delia.train.loss import LabelLoss
from delia.train.tokens import add_special_tokens

EXAMPLES = [
    Example(
        messages=[{"role": "user", "content": "Check this <sep> please"}, {"role": "assistant", "content": a}]
    )
    for a in ("{'thought': 'fine', 'hallucination': 'no'} <sep>", "yes", "a much longer answer " * 6)
]


def peft_model(tokenizer: Any, tie: bool, family: str = "llama") -> tuple[Any, Any]:
    tok = copy.deepcopy(tokenizer)
    model = tiny_llama(len(tok), seed=1, tie=tie) if family == "llama" else tiny_gemma3(len(tok), seed=1)
    ids = add_special_tokens(model, tok, TokensConfig(init="random"))
    wrapped = wrap_lora(model, LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["all-linear"]), ids)
    torch.manual_seed(2)
    with torch.no_grad():  # LoRA B starts at zero and token rows at their init: move both off it
        for param in wrapped.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.05)
    return wrapped.train(), tok


def hf_loss(model: Any, items: list[Any], pad_id: int) -> torch.Tensor:
    batch = pad(items, {"task": 0}, pad_id)
    labels = batch.input_ids.clone()
    for row, item in enumerate(items):
        labels[row, : item.n_prompt] = IGNORE
        labels[row, len(item.input_ids) :] = IGNORE
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels).loss


@pytest.mark.parametrize(("tie", "family"), [(True, "llama"), (False, "llama"), (True, "gemma3")])
def test_label_loss_equals_full_logit_loss(tokenizer: Any, tie: bool, family: str) -> None:
    """gemma3: a 4-token sliding window on one layer (the examples are longer), soft-capped logits and
    scaled embeddings must come out as transformers' own forward computes them."""
    model, tok = peft_model(tokenizer, tie, family)
    items = encode_examples(EXAMPLES, tok, max_length=256)
    delta = next(p for n, p in model.named_parameters() if "trainable_tokens_delta" in n)

    reference = hf_loss(model, items, tok.pad_token_id)
    reference.backward()
    reference_grad = delta.grad.clone()
    delta.grad = None

    loss_module = LabelLoss(model)
    padded = loss_module(pad(items, {"task": 0}, tok.pad_token_id))
    assert abs(padded.loss_sum.item() / padded.token_losses.numel() - reference.item()) < 1e-5
    with packed_attention_for(model.get_base_model()) as packed_ok:
        assert packed_ok
        packed = loss_module(pack(items, {"task": 0}))
        (packed.loss_sum / packed.token_losses.numel()).backward()
    assert abs(packed.loss_sum.item() / sum(i.n_labels for i in items) - reference.item()) < 1e-5
    assert delta.grad.abs().sum() > 0  # the new row is reached through the head and the embedding
    assert torch.allclose(delta.grad, reference_grad, atol=1e-6)
    assert model.get_base_model().config._attn_implementation == "sdpa"  # restored after training


def test_bf16_weight_copies_change_nothing_under_autocast(tokenizer: Any) -> None:
    from delia.core.models import autocast
    from delia.train.precision import bf16_frozen_weights, frozen_linears

    model, tok = peft_model(tokenizer, tie=True)
    batch = pack(encode_examples(EXAMPLES, tok, max_length=256), {"task": 0})
    loss_module = LabelLoss(model)
    weights = [m.weight.data for m in frozen_linears(model)]
    assert weights and all(w.dtype == torch.float32 for w in weights)
    with packed_attention_for(model.get_base_model()), autocast("cpu", "bf16"):
        reference = loss_module(batch).loss_sum
        with bf16_frozen_weights(model, enabled=True):
            assert all(m.weight.dtype == torch.bfloat16 for m in frozen_linears(model))
            cached = loss_module(batch).loss_sum
    assert torch.equal(reference, cached)
    restored = frozen_linears(model)
    assert all(m.weight.data_ptr() == w.data_ptr() for m, w in zip(restored, weights, strict=True))


def lora_grads(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


def packed_loss_and_grads(model: Any, tok: Any) -> tuple[float, dict[str, torch.Tensor]]:
    items = encode_examples(EXAMPLES, tok, max_length=256)
    model.zero_grad(set_to_none=True)
    with packed_attention_for(model.get_base_model()):
        out = LabelLoss(model)(pack(items, {"task": 0}))
        (out.loss_sum / out.token_losses.numel()).backward()
    return out.loss_sum.item(), lora_grads(model)


def test_the_head_in_checkpointed_chunks_gives_the_same_loss_and_gradients(
    tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of 3 label positions, each recomputed in backward, equal one pass over all of them."""
    import delia.train.loss as loss

    model, tok = peft_model(tokenizer, tie=True)
    whole_loss, whole = packed_loss_and_grads(model, tok)
    monkeypatch.setattr(loss, "HEAD_CHUNK", 3)
    chunked_loss, chunked = packed_loss_and_grads(model, tok)
    assert chunked_loss == pytest.approx(whole_loss, rel=1e-6)
    assert whole.keys() == chunked.keys() and len(whole) > 2
    for name, grad in whole.items():
        assert torch.allclose(chunked[name], grad, atol=1e-6), name


def test_gradient_checkpointing_changes_memory_not_results(tokenizer: Any) -> None:
    from delia.train.compile import checkpointed_layers

    model, tok = peft_model(tokenizer, tie=True)
    plain_loss, plain = packed_loss_and_grads(model, tok)
    with checkpointed_layers(model, enabled=True):
        assert model.get_base_model().model.gradient_checkpointing
        ckpt_loss, ckpt = packed_loss_and_grads(model, tok)
    assert not model.get_base_model().model.gradient_checkpointing  # off again after training
    assert ckpt_loss == pytest.approx(plain_loss, rel=1e-6)
    for name, grad in plain.items():
        assert torch.allclose(ckpt[name], grad, atol=1e-6), name
