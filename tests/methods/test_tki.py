"""TKI: latent task adaptation, knowledge reinstatement, PCGrad, artefacts (tiny model unless marked slow)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from delia.methods.tki import kr, pcgrad
from delia.methods.tki.encoder import CachedEncoder
from delia.methods.tki.lta import LatentAdapter, LatentBank, LatentSpec, find_targets
from delia.methods.tki.routing import NO_GROUP, Routing, UserTurnExtractor, orthogonal_keys, retrieve

# ------------------------------------------------------------------------------------------------ helpers


class HashEncoder:
    """A deterministic stand-in for the sentence encoder: a seeded random vector per text."""

    def __init__(self, dim: int = 32) -> None:
        self.name = f"hash-{dim}"
        self.dim = dim
        self.calls = 0

    def encode(self, texts: list[str]) -> torch.Tensor:
        self.calls += len(texts)
        rows = []
        for text in texts:
            generator = torch.Generator().manual_seed(
                sum(ord(c) * (i + 1) for i, c in enumerate(text)) % 2**31
            )
            rows.append(torch.randn(self.dim, generator=generator))
        return torch.stack(rows) if rows else torch.zeros(0, self.dim)


def chat(user: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def train_batch(tokenizer, pairs: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    """Right-padded rows with assistant-only labels, as a trainer would build them."""
    rows, labels = [], []
    for user, answer in pairs:
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], add_generation_prompt=True
        )
        prompt = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
        reply = tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
        rows.append(prompt + reply)
        labels.append([kr.IGNORE] * len(prompt) + reply)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    return {
        "input_ids": torch.tensor([r + [pad] * (width - len(r)) for r in rows]),
        "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
        "labels": torch.tensor([lab + [kr.IGNORE] * (width - len(lab)) for lab in labels]),
    }


def latent_spec(model, groups: int = 3, latents: int = 4, top_k: int = 2, dim: int = 32) -> LatentSpec:
    return LatentSpec(
        groups=groups,
        latents=latents,
        top_k=top_k,
        rank=2,
        scaling=2.0,
        dropout=0.0,
        dim=dim,
        encoder="hash",
        targets=find_targets(model, ["q_proj", "v_proj"]),
    )


# ------------------------------------------------------------------------------------------------ keys


def test_keys_are_unit_and_orthogonal_within_each_group() -> None:
    keys = orthogonal_keys(groups=5, latents=12, dim=384, seed=3)
    assert keys.shape == (5, 12, 384)
    gram = keys @ keys.transpose(1, 2)
    assert torch.allclose(gram, torch.eye(12).expand(5, 12, 12), atol=1e-5)
    assert not torch.allclose(keys[0], keys[1])  # groups differ
    assert torch.equal(keys, orthogonal_keys(5, 12, 384, seed=3))  # seeded


def test_more_latents_than_dimensions_is_a_config_error() -> None:
    from delia.core.errors import ConfigError

    with pytest.raises(ConfigError, match=r"tki\.latents"):
        orthogonal_keys(groups=1, latents=9, dim=8, seed=0)


# ------------------------------------------------------------------------------------------------ retrieval


def test_retrieval_weights_sum_to_one_and_pick_the_closest_keys() -> None:
    keys = orthogonal_keys(groups=4, latents=6, dim=16, seed=0)
    embeddings = torch.randn(7, 16, generator=torch.Generator().manual_seed(1))
    groups = torch.tensor([0, 1, 2, 3, 0, NO_GROUP, NO_GROUP])
    for weighting in ("cosine", "softmax"):
        for mode in ("all", "best"):
            routing = retrieve(embeddings, keys, groups, 2, weighting, 0.1, mode)
            assert torch.allclose(routing.weight.sum(-1), torch.ones(7), atol=1e-6)
            assert (routing.weight >= 0).all()
    routing = retrieve(embeddings, keys, groups, 2, "cosine", 0.1, "all")
    assert routing.index.shape == (7, 4 * 2)  # unseen inputs draw on every group
    cosine = torch.nn.functional.normalize(embeddings, dim=-1) @ keys[1].T
    chosen = routing.index[1, :2] - 1 * 6  # example 1 lives in group 1: indices offset by one group
    assert set(chosen.tolist()) == set(cosine[1].topk(2).indices.tolist())
    assert (routing.index[:5, 2:] == 0).all() and (routing.weight[:5, 2:] == 0).all()  # padding, no weight


def test_softmax_weights_sharpen_with_lower_temperature() -> None:
    keys = orthogonal_keys(groups=1, latents=4, dim=8, seed=0)
    embedding = keys[0, 0:1] * 0.9 + keys[0, 1:2] * 0.4
    groups = torch.tensor([0])
    soft = retrieve(embedding, keys, groups, 2, "softmax", 1.0).weight[0]
    sharp = retrieve(embedding, keys, groups, 2, "softmax", 0.01).weight[0]
    assert sharp.max() > soft.max() > 0.5


# ------------------------------------------------------------------------------------------------ LTA forward


def test_batched_latent_forward_equals_a_per_example_loop() -> None:
    torch.manual_seed(0)
    bank = LatentBank(n_latents=12, in_features=10, out_features=6, rank=3, scaling=2.0)
    with torch.no_grad():
        bank.down.normal_()  # the A = 0 init would make every delta zero and the test vacuous
    x = torch.randn(4, 5, 10)
    index = torch.tensor([[0, 3], [7, 7], [11, 2], [5, 0]])
    weight = torch.tensor([[0.7, 0.3], [0.5, 0.5], [1.0, 0.0], [0.2, 0.8]])
    batched = bank(x, Routing(index, weight))
    for b in range(4):
        delta_w = sum(
            weight[b, j] * bank.up[index[b, j]].T @ bank.down[index[b, j]] for j in range(index.shape[1])
        )
        expected = x[b] @ (2.0 * delta_w).T
        assert torch.allclose(batched[b], expected, atol=1e-5)


def test_latent_init_starts_at_the_base_model_and_gradients_reach_a(tiny_model, tokenizer) -> None:
    adapter = LatentAdapter(latent_spec(tiny_model))
    adapter.encoder = HashEncoder()
    batch = train_batch(tokenizer, [("What is 2+2?", "4"), ("Name a colour.", "Blue")])
    tiny_model.eval()
    with torch.no_grad():
        before = tiny_model(**batch).logits
    adapter.attach(tiny_model, tokenizer)
    out = tiny_model(**batch)
    assert torch.allclose(out.logits, before, atol=1e-6)  # A = 0: no change at the start
    out.loss.backward()
    bank = next(iter(adapter.banks.values()))
    assert bank.down.grad is not None and bank.down.grad.abs().sum() > 0  # B != 0 passes gradient to A
    assert bank.up.grad is not None and bank.up.grad.abs().sum() == 0  # A x = 0: none to B yet
    adapter.detach(tiny_model)
    assert not hasattr(tiny_model, "tki_latents")


def test_model_forward_with_latents_matches_explicit_weight_merge(tiny_model, tokenizer) -> None:
    """End to end through the hooks: each example's logits equal those of a model whose target weights
    had that example's interpolated increment merged in."""
    import copy

    spec = latent_spec(tiny_model)
    adapter = LatentAdapter(spec)
    adapter.encoder = HashEncoder()
    with torch.no_grad():
        for bank in adapter.banks.values():
            bank.down.normal_(std=0.05)
    pairs = [("What is 2+2?", "4"), ("Name a colour.", "Blue"), ("Say hi.", "Hi")]
    batch = train_batch(tokenizer, pairs)
    reference = copy.deepcopy(tiny_model)
    adapter.attach(tiny_model, tokenizer)
    tiny_model.eval()
    with torch.no_grad():
        logits = tiny_model(**batch).logits
    routing = adapter.current
    assert routing is not None and routing.index.shape[0] == 3
    modules = dict(reference.named_modules())
    for b in range(3):
        merged = copy.deepcopy(reference)
        merged_modules = dict(merged.named_modules())
        with torch.no_grad():
            for name in spec.targets:
                bank = adapter.banks[name.replace(".", "__")]
                delta = sum(
                    routing.weight[b, j] * bank.up[routing.index[b, j]].T @ bank.down[routing.index[b, j]]
                    for j in range(routing.index.shape[1])
                )
                merged_modules[name].weight.copy_(modules[name].weight + bank.scaling * delta)
            single = merged(**{k: v[b : b + 1] for k, v in batch.items()}).logits[0]
        assert torch.allclose(logits[b], single, atol=1e-4)


def test_router_reads_the_last_user_turn_and_uses_training_groups(tiny_model, tokenizer) -> None:
    extractor = UserTurnExtractor(tokenizer)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "Context: x <sep> second question"},
    ]
    assert extractor.prompt_text(messages) == "Context: x <sep> second question"
    adapter = LatentAdapter(latent_spec(tiny_model))
    adapter.encoder = HashEncoder()
    adapter.attach(tiny_model, tokenizer)
    batch = train_batch(tokenizer, [("What is 2+2?", "4"), ("Name a colour.", "Blue")])
    adapter.group_of = {"What is 2+2?": 2}
    tiny_model.train()
    tiny_model(**batch)
    assert adapter.current is not None
    assert (adapter.current.index[0, :2] // 4 == 2).all()  # example 0 retrieves inside its group 2
    assert adapter.unknown_in_training == 1  # the second text was never assigned a group
    tiny_model.eval()
    tiny_model(**batch)  # inference, "best": top-k inside the group of the single most similar key
    best = adapter.current.index
    assert best.shape[1] == 2 and (best[:, 0] // 4 == best[:, 1] // 4).all()
    adapter.spec.inference_groups = "all"
    tiny_model(**batch)
    assert adapter.current.index.shape[1] == 3 * 2  # "all": every group contributes its top-k


def test_generation_keeps_the_prompt_routing_while_decoding(tiny_model, tokenizer) -> None:
    adapter = LatentAdapter(latent_spec(tiny_model))
    encoder = HashEncoder()
    adapter.encoder = encoder
    adapter.attach(tiny_model, tokenizer)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer([text], return_tensors="pt", add_special_tokens=False)
    tiny_model.generate(**inputs, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert encoder.calls == 1  # routed once, at prefill; decoding steps reuse it


def test_a_bf16_deep_copy_of_the_model_carries_its_own_working_latents(tiny_model, tokenizer) -> None:
    """The local backend generates with a bf16 deep copy of the model: the copy must route and add its own
    latents (hooks rebound to the copied adapter), with float32 keys, sharing the encoder."""
    import copy

    adapter = LatentAdapter(latent_spec(tiny_model))
    adapter.encoder = CachedEncoder(HashEncoder(), None)
    with torch.no_grad():
        for bank in adapter.banks.values():
            bank.down.normal_(std=0.2)
    adapter.attach(tiny_model, tokenizer)
    tiny_model.eval()
    batch = train_batch(tokenizer, PAIRS)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        original = tiny_model(**inputs).logits
        twin = copy.deepcopy(tiny_model).to(torch.bfloat16)
        twin_adapter = twin.tki_latents
        assert twin_adapter is not adapter and twin_adapter.encoder is adapter.encoder
        assert twin_adapter.keys.dtype == torch.float32 and torch.equal(twin_adapter.keys, adapter.keys)
        adapter.current = None
        with_latents = twin(**inputs).logits.float()
        assert twin_adapter.current is not None and adapter.current is None
        twin_adapter.active = False
        without = twin(**inputs).logits.float()
    assert (with_latents - original).abs().max() < (without - original).abs().max()


def test_segments_for_left_padded_prompts_and_position_packed_rows() -> None:
    from delia.methods.tki.segments import find_segments

    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    left = find_segments((2, 4), attention_mask=mask)
    assert left.row_aligned and left.token_segment.tolist() == [[-1, -1, 0, 0], [1, 1, 1, 1]]
    packed = find_segments((1, 6), position_ids=torch.tensor([[0, 1, 2, 0, 1, 0]]))
    assert not packed.row_aligned and packed.count == 3
    assert packed.token_segment.tolist() == [[0, 0, 0, 1, 1, 2]]
    assert packed.token_lists(torch.tensor([[5, 6, 7, 8, 9, 10]])) == [[5, 6, 7], [8, 9], [10]]
    gather, valid, scatter = packed.layout()
    assert gather.tolist() == [[0, 1, 2], [3, 4, 0], [5, 0, 0]]
    assert valid.sum().item() == 6 and scatter.tolist() == [0, 1, 2, 3, 4, 6]


# ----------------------------------------------------------------------------------------- encoder cache


def test_encoder_cache_survives_a_restart(tmp_path) -> None:
    inner = HashEncoder(dim=8)
    cached = CachedEncoder(inner, tmp_path)
    first = cached.encode(["a", "b", "a"])
    assert inner.calls == 2 and cached.hits == 1
    cached.close()
    again = CachedEncoder(HashEncoder(dim=8), tmp_path)
    second = again.encode(["b", "a"])
    assert again.inner.calls == 0
    assert torch.equal(second, first[[1, 0]])
    again.close()


def test_minilm_falls_back_to_the_base_model_encoder_with_a_warning(
    tiny_model, tokenizer, monkeypatch
) -> None:
    from delia.methods.tki import encoder

    monkeypatch.setattr(encoder, "_minilm_path", lambda: None)
    with pytest.warns(UserWarning, match="encoding with the base model"):
        fallback = encoder.make_encoder(encoder.MINILM, tiny_model, tokenizer, cache_dir=None)
    assert isinstance(fallback.inner, encoder.BaseModelEncoder) and fallback.dim == 64
    vectors = fallback.encode(["one text", "another text"])
    assert vectors.shape == (2, 64) and not torch.allclose(vectors[0], vectors[1])


def test_tki_is_registered_and_its_switches_shape_the_plan(tiny_model_dir) -> None:
    from delia.methods import available, get_method

    assert "tki" in available()
    plan = get_method("tki").plan(tki_config(tiny_model_dir, lta=False, kr=False), [])
    assert plan.hooks is None and plan.schedule == "task_only" and not plan.use_diverse
    assert any("w/o latent task adaptation" in note for note in plan.notes)


# ------------------------------------------------------------------------------------------------ PCGrad


def test_pcgrad_removes_the_conflicting_component() -> None:
    g1 = [torch.tensor([1.0, 0.0]), torch.tensor([1.0])]
    g2 = [torch.tensor([-1.0, 1.0]), torch.tensor([0.0])]
    assert pcgrad.dot(g1, g2) < 0
    (p1, p2), n = pcgrad.project_conflicting([g1, g2], seed=0)
    assert n == 2
    assert pcgrad.dot(p1, g2) >= -1e-9 and pcgrad.dot(p2, g1) >= -1e-9
    assert abs(pcgrad.dot(p1, g2).item()) < 1e-9  # exactly on the normal plane
    # g1 - (g1.g2 / |g2|^2) g2 with g1.g2 = -1, |g2|^2 = 2
    assert torch.allclose(p1[0], torch.tensor([0.5, 0.5])) and torch.allclose(p1[1], torch.tensor([1.0]))


def test_pcgrad_leaves_agreeing_gradients_alone() -> None:
    g1 = [torch.tensor([1.0, 2.0]), None]
    g2 = [torch.tensor([0.5, 0.1]), torch.tensor([3.0])]
    (p1, p2), n = pcgrad.project_conflicting([g1, g2])
    assert n == 0
    assert torch.equal(p1[0], g1[0]) and p1[1] is None
    assert torch.equal(p2[0], g2[0]) and torch.equal(p2[1], g2[1])
    summed, _ = pcgrad.combine([g1, g2])
    assert torch.allclose(summed[0], torch.tensor([1.5, 2.1])) and torch.equal(summed[1], g2[1])


def test_pcgrad_random_conflicts_end_non_negative() -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        a = [torch.randn(5, generator=generator), torch.randn(3, generator=generator)]
        b = [torch.randn(5, generator=generator), torch.randn(3, generator=generator)]
        (pa, pb), _ = pcgrad.project_conflicting([a, b])
        assert pcgrad.dot(pa, b) >= -1e-6 and pcgrad.dot(pb, a) >= -1e-6


# ------------------------------------------------------------------------------------------------ KR


def test_wasserstein_is_zero_for_a_permutation_and_positive_otherwise() -> None:
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    assert kr.wasserstein2_squared(x[torch.randperm(6)], x).item() < 1e-10
    shifted = x + 0.5
    assert abs(kr.wasserstein2_squared(shifted, x).item() - 0.25 * 4) < 1e-5  # a pure shift: |shift|^2


def test_packed_rows_route_each_example_like_its_own_padded_row(tiny_model, tokenizer) -> None:
    """delia.train packs several examples into one row (cu_seq_lens); each must get its own latents."""
    from delia.train.attention import packed_attention_for

    adapter = LatentAdapter(latent_spec(tiny_model))
    adapter.encoder = HashEncoder()
    with torch.no_grad():
        for bank in adapter.banks.values():
            bank.down.normal_(std=0.05)
    adapter.attach(tiny_model, tokenizer)
    tiny_model.eval()
    pairs = [("What is 2+2?", "4"), ("Name a colour.", "Blue"), ("Say hi.", "Hi there")]
    batch = train_batch(tokenizer, pairs)
    with torch.no_grad():
        padded = tiny_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    padded_routing = adapter.current
    lengths = batch["attention_mask"].sum(1).tolist()
    ids = torch.cat([row[:n] for row, n in zip(batch["input_ids"], lengths, strict=True)]).unsqueeze(0)
    positions = torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0)
    bounds = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    with packed_attention_for(tiny_model) as packed_ok, torch.no_grad():
        assert packed_ok
        packed = tiny_model(
            input_ids=ids,
            position_ids=positions,
            cu_seq_lens_q=bounds,
            cu_seq_lens_k=bounds,
            max_length_q=max(lengths),
            max_length_k=max(lengths),
        ).logits[0]
    assert adapter.current.segments is not None and not adapter.current.per_row
    assert torch.equal(adapter.current.index, padded_routing.index)
    start = 0
    for row, n in enumerate(lengths):
        assert torch.allclose(packed[start : start + n], padded[row, :n], atol=1e-4)
        start += n


# ------------------------------------------------------------------------------------------------ KR


PAIRS = [("What is 2+2?", "4"), ("Name a colour.", "Blue, like the sky"), ("Say hi.", "Hi there")]


def examples_of(pairs: list[tuple[str, str]]):
    from delia.core.example import Example

    return [Example(messages=chat(user, answer)) for user, answer in pairs]


def micro_batch(tokenizer, examples, packing: bool = False) -> dict:
    """A micro-batch exactly as delia.train builds it (as the dict its hooks receive)."""
    from delia.train.collate import collate, encode_examples

    encoded = encode_examples(examples, tokenizer, 256)
    return vars(collate(encoded, {"task": 0}, tokenizer.pad_token_id, packing))


def test_input_span_is_each_examples_prompt_in_padded_and_packed_batches(tokenizer) -> None:
    from delia.train.collate import encode_examples

    prompts = [item.n_prompt for item in encode_examples(examples_of(PAIRS), tokenizer, 256)]
    for packing in (False, True):
        batch = micro_batch(tokenizer, examples_of(PAIRS), packing)
        segments = kr.batch_segments(batch)
        assert segments.count == 3 and segments.row_aligned is not packing
        span = kr.input_span(segments, batch["targets"])
        owners = segments.token_segment[span]
        assert torch.bincount(owners, minlength=3).tolist() == prompts


def test_per_example_ce_matches_the_trainer_loss_padded_and_packed(tiny_model, tokenizer) -> None:
    from delia.train.attention import packed_attention_for
    from delia.train.collate import MicroBatch
    from delia.train.loss import LabelLoss

    tiny_model.eval()
    results = []
    with torch.no_grad(), packed_attention_for(tiny_model):
        for packing in (False, True):
            batch = micro_batch(tokenizer, examples_of(PAIRS), packing)
            segments = kr.batch_segments(batch)
            fields = {k: batch[k] for k in MicroBatch.__dataclass_fields__}
            outputs = LabelLoss(tiny_model)(MicroBatch(**fields))
            from_outputs = kr.ce_from_outputs(outputs, batch, segments)
            recomputed = kr.per_example_ce(tiny_model, batch, segments)
            assert torch.allclose(from_outputs, recomputed, atol=1e-5)
            owners = segments.token_segment[outputs.label_mask]
            per_example_labels = torch.bincount(owners, minlength=3).double()
            assert torch.allclose(
                (from_outputs.double() * per_example_labels).sum(), outputs.loss_sum.double(), atol=1e-3
            )
            results.append(recomputed)
    assert torch.allclose(results[0], results[1], atol=1e-4)  # packing changes nothing per example


def test_reinstatement_changes_embeddings_and_leaves_the_model_frozen(tiny_model, tokenizer) -> None:
    batch = micro_batch(tokenizer, examples_of(PAIRS))
    segments = kr.batch_segments(batch)
    span = kr.input_span(segments, batch["targets"])
    before = {name: p.detach().clone() for name, p in tiny_model.named_parameters()}
    with torch.no_grad():
        originals = kr.span_rows(tiny_model.get_input_embeddings()(batch["input_ids"]), span, segments)
    queries, summary = kr.reinstate(tiny_model, batch, steps=5, lr=0.05, distance_weight=0.1)
    assert [q.shape for q in queries] == [o.shape for o in originals]
    assert all(not torch.allclose(q, o) for q, o in zip(queries, originals, strict=True))
    assert summary["ce_after"] < summary["ce_before"] and summary["w2_after"] > 0  # p(y | q) went up
    for name, p in tiny_model.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.grad is None, name
    tiny_model.eval()
    with torch.no_grad():
        ce_x = kr.per_example_ce(tiny_model, batch, segments)
        embeds = kr.embeddings_with_inputs(tiny_model, batch, span, list(queries))
        ce_q = kr.per_example_ce(tiny_model, batch, segments, embeds)
    assert (ce_q < ce_x).all()
    assert torch.allclose(
        kr_objective_of_the_hooks(tiny_model, batch, queries), torch.maximum(ce_q, ce_x).mean()
    )
    unchanged = kr.embeddings_with_inputs(tiny_model, batch, span, [None, None, None])
    assert torch.equal(unchanged, tiny_model.get_input_embeddings()(batch["input_ids"]))


def kr_objective_of_the_hooks(model, batch: dict, queries) -> torch.Tensor:
    """What TkiHooks adds to a micro-batch's loss (alpha 1, no PCGrad) given these reinstated inputs."""
    from delia.core.config import build_config
    from delia.methods.tki.hooks import TkiHooks
    from delia.train.collate import MicroBatch
    from delia.train.loss import LabelLoss

    config = build_config(
        {"method": "tki", "train": {"autocast": "none"}, "tki": {"pcgrad": False, "alpha": 1}}
    )
    hooks = TkiHooks(config)
    hooks.reinstated = dict(zip(batch["example_ids"], queries, strict=True))
    with torch.no_grad():
        outputs = LabelLoss(model)(MicroBatch(**{k: batch[k] for k in MicroBatch.__dataclass_fields__}))
        return hooks.extra_loss(model, batch, outputs)


# ------------------------------------------------------------------------------------------------ hooks


def tki_config(model_dir, autocast: str = "none", **tki: object):
    from delia.core.config import build_config

    options = {"groups": 2, "latents": 3, "top_k": 2, "rank": 2, "encoder": "base", "kr_steps": 2, **tki}
    return build_config(
        {
            "model": {"name": str(model_dir)},
            "method": "tki",
            "tokens": {"add": []},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "train": {
                "max_steps": 2,
                "batch_size": 3,
                "micro_batch_size": 2,
                "lr": 5e-3,
                "max_length": 256,
                "autocast": autocast,
            },
            "tki": options,
        }
    )


def test_pcgrad_surrogate_turns_the_trainer_gradient_into_the_projected_one(
    tiny_model, tokenizer, tiny_model_dir, monkeypatch, tmp_path
) -> None:
    from delia.methods.tki.hooks import TkiHooks
    from delia.train.collate import MicroBatch
    from delia.train.lora import wrap_lora
    from delia.train.loss import LabelLoss

    monkeypatch.setenv("DELIA_CACHE", str(tmp_path))
    config = tki_config(tiny_model_dir, lta=False)
    model = wrap_lora(tiny_model, config.lora, [])
    with torch.no_grad():  # a trained-looking LoRA, so both objectives have gradients everywhere
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    model.train()
    torch.manual_seed(0)
    hooks = TkiHooks(config)
    hooks.setup(model, tokenizer, examples_of(PAIRS))
    batch = micro_batch(tokenizer, examples_of(PAIRS))
    batch["examples"] = examples_of(PAIRS)
    # Noisy reinstated inputs make CE(q) the larger side, so the q objective is active and can conflict.
    hooks.reinstated = {k: v + torch.randn_like(v) for k, v in hooks.reinstated.items()}
    params = [p for p in model.parameters() if p.requires_grad]
    fields = {k: batch[k] for k in MicroBatch.__dataclass_fields__}

    def forward():
        outputs = LabelLoss(model)(MicroBatch(**fields))
        return outputs, kr.batch_segments(batch)

    outputs, segments = forward()
    ce_x = kr.ce_from_outputs(outputs, batch, segments)
    span = kr.input_span(segments, batch["targets"])
    queries = [hooks.reinstated[i] for i in batch["example_ids"]]
    ce_q = kr.per_example_ce(model, batch, segments, kr.embeddings_with_inputs(model, batch, span, queries))
    harder = (ce_q > ce_x).float().detach()
    assert harder.any()
    n = batch["n_labels"]
    original = outputs.loss_sum / n + (((1 - harder) * ce_x).sum() / 3)
    reinstated = (harder * ce_q).sum() / 3
    g1 = torch.autograd.grad(original, params, retain_graph=True)
    g2 = torch.autograd.grad(reinstated, params)
    expected, _ = pcgrad.combine([list(g1), list(g2)])

    outputs, _ = forward()
    extra = hooks.extra_loss(model, batch, outputs)
    assert torch.allclose(extra, (original + reinstated).detach() - outputs.loss_sum.detach() / n, atol=1e-4)
    (outputs.loss_sum + extra * n).backward()  # what the trainer does (up to its 1/step-labels scale)
    for p, e in zip(params, expected, strict=True):
        assert torch.allclose(p.grad, n * e, atol=1e-4, rtol=1e-3), (
            p.shape,
            (p.grad - n * e).abs().max(),
            (n * e).abs().max(),
        )
    assert hooks.stats["pcgrad_micro_batches"] == 1


@pytest.mark.parametrize(("lta", "kr_on"), [(True, True), (True, False), (False, True)])
def test_trained_tki_adapter_saves_and_reloads_with_identical_logits(
    tiny_model, tokenizer, tiny_model_dir, monkeypatch, tmp_path, lta: bool, kr_on: bool
) -> None:
    from delia.methods import get_method, load_trained
    from delia.methods.tki.artifacts import MARKER, WEIGHTS, read_marker
    from delia.train import fit, load_adapter_model

    monkeypatch.setenv("DELIA_CACHE", str(tmp_path / "cache"))
    config = tki_config(tiny_model_dir, autocast="bf16", lta=lta, kr=kr_on)  # packed rows under bf16
    examples = examples_of(PAIRS)
    plan = get_method("tki").plan(config, examples)
    assert plan.hooks is not None and not plan.use_diverse and plan.special_tokens == []
    trained = fit(config, tiny_model, tokenizer, [], examples, tmp_path / "out", hooks=plan.hooks)
    adapter_dir = tmp_path / "out" / "adapter"
    hooks = plan.hooks
    assert read_marker(adapter_dir)["lta"] is lta and (adapter_dir / WEIGHTS).exists() is lta
    assert (adapter_dir / MARKER).exists()
    assert hooks.stats["kr_micro_batches"] == (4 if kr_on else 0)  # 2 steps x 2 micro-batches
    assert (hooks.stage_one is not None) is kr_on
    if lta:
        assert hooks.adapter.unknown_in_training == 0  # every training input found its group
        bank = next(iter(hooks.adapter.banks.values()))
        assert bank.down.abs().sum() > 0  # the latent increments trained

    prompt = tokenizer.apply_chat_template(
        chat("Name a colour.", "x")[:1], tokenize=False, add_generation_prompt=True
    )
    inputs = tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    trained.model.eval()
    with torch.no_grad():
        in_memory = trained.model(**inputs).logits
    model, _ = load_trained(str(tiny_model_dir), adapter_dir)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, in_memory)
    if lta:
        peft_only, _ = load_adapter_model(str(tiny_model_dir), adapter_dir)
        with torch.no_grad():  # the plain adapter loader leaves the latents to the method's hooks
            assert not torch.allclose(peft_only(**inputs).logits, in_memory)
        model.get_base_model().tki_latents.active = False
        with torch.no_grad():  # without the latents the answer changes: the round trip really carries them
            assert not torch.allclose(model(**inputs).logits, in_memory)


# ------------------------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_tiny_tki_pipeline_run_on_the_embedded_model_trains_saves_and_evaluates(
    tmp_path, shared_data
) -> None:
    """`delia run` with method tki: the embedded SmolLM2, the MiniLM encoder, 4 task examples, one step."""
    import json

    from delia.core.config import build_config
    from delia.methods.tki.artifacts import read_marker
    from delia.pipeline import run

    data = shared_data / "delia-reproduce"
    config = build_config(
        {
            "name": "tki",
            "method": "tki",
            "run_dir": str(tmp_path / "runs"),
            "task": {"train": str(data / "train_dataset.jsonl"), "size": 4},
            "eval": {
                "file": str(data / "eval_dataset.jsonl"),
                "limit": 2,
                "max_new_tokens": 8,
                "bootstrap": 20,
            },
            "train": {"max_steps": 2, "batch_size": 2, "micro_batch_size": 2, "max_length": 384},
            "tki": {"groups": 2, "latents": 4, "rank": 2, "kr_steps": 1},
        }
    )
    run_dir = run(config, log=lambda line: None)
    marker = read_marker(run_dir / "adapter")
    # MiniLM needs sentence-transformers (`embed` extra); else TKI falls back to base-model states.
    has_minilm = importlib.util.find_spec("sentence_transformers") is not None
    expected = ("all-MiniLM-L6-v2", 384) if has_minilm else ("base", 576)
    assert marker["lta"] and (marker["spec"]["encoder"], marker["spec"]["dim"]) == expected
    summary = marker["summary"]
    assert summary["kr_stage_one"]["ce_after"] < summary["kr_stage_one"]["ce_before"]
    assert summary["kr_micro_batches"] == 2 and summary["routed_as_unseen_in_training"] == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n"] == 2
    assert len((run_dir / "predictions.jsonl").read_text().splitlines()) == 2
