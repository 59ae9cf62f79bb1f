"""Local backend, self-sampling (resume after a crash or SIGKILL), built-in queries, stats, make_backend."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_llama

from delia.core.config import BackendConfig, SampleConfig, SamplingConfig
from delia.core.errors import ConfigError, DeliaError
from delia.core.example import Example
from delia.data.io import read_examples, write_jsonl
from delia.generation import make_backend
from delia.generation.base import GenerationStats
from delia.generation.local import LocalBackend
from delia.synth.sample import build_prompt, cache_path, load_queries, manifest_path, sample_diverse
from delia.synth.stats import dataset_stats, distinct_n, length_histogram, near_duplicate_rate, tfidf_vectors
from delia.synth.topics import builtin_queries

GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=8)


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class EchoBackend:
    """Answers 'answer: <last user turn>'; raises after `fail_after` generate calls to simulate a crash."""

    name = "echo"

    def __init__(self, fail_after: int | None = None) -> None:
        self.stats = GenerationStats()
        self.fail_after = fail_after
        self.calls = 0
        self.seen: list[str] = []
        self.last_new_tokens: list[int] = []

    def generate(self, prompts: list[list[dict[str, str]]], sampling: SamplingConfig) -> list[str]:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("simulated crash")
        self.calls += 1
        queries = [p[-1]["content"] for p in prompts]
        self.seen += queries
        self.last_new_tokens = [len(q.split()) for q in queries]
        self.stats.new_tokens += sum(self.last_new_tokens)
        self.stats.seconds += 0.01
        return [f"answer: {q}" for q in queries]


# ---------------------------------------------------------------- local backend


def test_batched_left_padded_generation_equals_single_prompt_greedy(tokenizer: Any) -> None:
    # Untied: the tied tiny model greedily repeats the prompt's last token ("\n"), which decodes to "".
    tiny_model = tiny_llama(len(tokenizer), tie=False)
    prompts = [
        user("Hi"),
        user("Write a long sentence about the sea and the sky and the birds above."),
        user("2+2?"),
    ]
    batched = LocalBackend(tiny_model, tokenizer, batch_size=3, autocast_mode="none", progress=False)
    single = LocalBackend(tiny_model, tokenizer, batch_size=1, autocast_mode="none", progress=False)
    together = batched.generate(prompts, GREEDY)
    alone, alone_counts = [], []
    for prompt in prompts:
        alone.append(single.generate([prompt], GREEDY)[0])
        alone_counts.append(single.last_new_tokens[0])
    assert together == alone
    assert all(together)
    assert batched.last_new_tokens == alone_counts


def test_local_backend_counts_tokens_in_prompt_order(tiny_model: Any, tokenizer: Any) -> None:
    backend = LocalBackend(tiny_model, tokenizer, batch_size=2, autocast_mode="none", progress=False)
    out = backend.generate([user("a"), user("a much longer prompt than the first one")], GREEDY)
    assert len(out) == 2
    assert backend.stats.prompts == 2
    assert backend.stats.new_tokens == sum(backend.last_new_tokens)
    assert all(0 <= n <= GREEDY.max_new_tokens for n in backend.last_new_tokens)


def test_local_backend_follows_free_cores_between_decode_steps(
    tiny_model: Any, tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from delia.generation import threads as runtime

    # Another job takes a core once decoding has started: the next re-check drops to 1 thread mid-generate.
    checks: list[int] = []
    monkeypatch.setattr(runtime, "free_cores", lambda own_threads=0: 2 if not checks else 1)
    monkeypatch.setattr(runtime.ThreadPolicy, "INTERVAL_S", 0.0)
    original = runtime.ThreadPolicy.recheck

    def recheck(policy: runtime.ThreadPolicy) -> None:
        original(policy)
        checks.append(torch.get_num_threads())

    monkeypatch.setattr(runtime.ThreadPolicy, "recheck", recheck)
    before = torch.get_num_threads()
    try:
        runtime.install_thread_policy(runtime.ThreadPolicy(None, "cpu"))
        assert checks == [2]
        backend = LocalBackend(tiny_model, tokenizer, batch_size=2, autocast_mode="none", progress=False)
        backend.generate([user("a"), user("b")], GREEDY)
    finally:
        runtime.install_thread_policy(None)
        torch.set_num_threads(before)
    assert len(checks) > 2 and checks[-1] == 1


def test_make_backend_reuses_a_loaded_model_and_checks_openai_url(tiny_model: Any, tokenizer: Any) -> None:
    backend = make_backend(BackendConfig(batch_size=5), "ignored", model=tiny_model, tokenizer=tokenizer)
    assert isinstance(backend, LocalBackend) and backend.model is tiny_model and backend.batch_size == 5
    with pytest.raises(ConfigError, match="base_url"):
        make_backend(BackendConfig(kind="openai"), "m")


def test_vllm_backend_without_vllm_is_a_clear_error() -> None:
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    with pytest.raises(DeliaError, match="vllm"):
        make_backend(BackendConfig(kind="vllm"), "smollm2-135m-instruct")


# ---------------------------------------------------------------- sampling


def test_prompt_has_the_reference_as_one_in_context_turn() -> None:
    query = Example(messages=[*user("Name a colour."), {"role": "assistant", "content": "Blue."}])
    prompt = build_prompt(query, in_context=True)
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"]
    assert (
        prompt[1]["content"] == prompt[3]["content"] == "Name a colour." and prompt[2]["content"] == "Blue."
    )
    assert [m["role"] for m in build_prompt(query, in_context=False)] == ["system", "user"]
    bare = Example(messages=user("Name a colour."))
    assert [m["role"] for m in build_prompt(bare, in_context=True)] == ["system", "user"]


def _queries(n: int) -> list[Example]:
    return [
        Example(messages=[*user(f"query {i}"), {"role": "assistant", "content": f"ref {i}"}])
        for i in range(n)
    ]


def test_sampling_resumes_after_a_crash_answering_each_query_once(tmp_path: Path) -> None:
    queries = _queries(10)
    cfg = SampleConfig(backend=BackendConfig(batch_size=3))
    out = tmp_path / "s.jsonl"
    crashing = EchoBackend(fail_after=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sample_diverse(queries, crashing, cfg, out, "m")
    assert len(cache_path(out).read_text().splitlines()) == 6
    resumed = EchoBackend()
    examples = sample_diverse([*queries, queries[0]], resumed, cfg, out, "m")  # a duplicate query too
    assert len(resumed.seen) == 4 and not set(resumed.seen) & set(crashing.seen)
    assert sorted(ex.instruction for ex in examples) == sorted(q.instruction for q in queries)
    assert all(ex.source == "diverse" and ex.response == f"answer: {ex.instruction}" for ex in examples)
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["counts"]["from_cache"] == 6 and manifest["counts"]["answered_now"] == 4
    assert manifest["counts"]["written"] == 10 and manifest["model"] == "m"
    assert manifest["sampling"]["temperature"] == 0.7 and manifest["sampling"]["top_p"] == 0.95
    again = EchoBackend()
    sample_diverse(queries, again, cfg, out, "m")
    assert again.calls == 0  # everything cached


def test_cache_is_keyed_by_model_and_sampling(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    cfg = SampleConfig()
    sample_diverse(_queries(2), EchoBackend(), cfg, out, "model-a")
    other_model = EchoBackend()
    sample_diverse(_queries(2), other_model, cfg, out, "model-b")
    assert other_model.calls == 1
    hotter = EchoBackend()
    hot_cfg = cfg.model_copy(update={"sampling": SamplingConfig(temperature=1.0)})
    sample_diverse(_queries(2), hotter, hot_cfg, out, "model-a")
    assert hotter.calls == 1


def test_torn_cache_line_is_repaired_and_redone(tmp_path: Path) -> None:
    out = tmp_path / "s.jsonl"
    sample_diverse(_queries(3), EchoBackend(), SampleConfig(), out, "m")
    lines = cache_path(out).read_text().splitlines(keepends=True)
    cache_path(out).write_text("".join(lines[:2]) + lines[2][:10])  # the last write was cut by a crash
    redo = EchoBackend()
    examples = sample_diverse(_queries(3), redo, SampleConfig(), out, "m")
    # The interrupted batch is redone whole (same neighbours as before); only the lost answer is stored.
    assert len(redo.seen) == 3 and len(examples) == 3
    assert len(cache_path(out).read_text().splitlines()) == 3
    assert all(json.loads(line) for line in cache_path(out).read_text().splitlines())


def test_empty_answers_are_dropped_and_counted(tmp_path: Path) -> None:
    class Silent(EchoBackend):
        def generate(self, prompts: list[list[dict[str, str]]], sampling: SamplingConfig) -> list[str]:
            super().generate(prompts, sampling)
            return ["" if "1" in p[-1]["content"] else "ok" for p in prompts]

    out = tmp_path / "s.jsonl"
    examples = sample_diverse(_queries(3), Silent(), SampleConfig(), out, "m")
    assert len(examples) == 2
    assert json.loads(manifest_path(out).read_text())["counts"]["empty_dropped"] == 1


KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from delia.core.config import BackendConfig, SampleConfig, SamplingConfig
    from delia.core.example import Example
    from delia.generation.base import GenerationStats
    from delia.synth.sample import sample_diverse

    class Slow:
        name = "slow"
        def __init__(self):
            self.stats = GenerationStats()
        def generate(self, prompts, sampling):
            time.sleep(float(sys.argv[2]))
            return ["answer: " + p[-1]["content"] for p in prompts]

    queries = [Example(messages=[{"role": "user", "content": f"query {i}"}]) for i in range(12)]
    cfg = SampleConfig(backend=BackendConfig(batch_size=2))
    sample_diverse(queries, Slow(), cfg, Path(sys.argv[1]), "m")
    """
)


def test_sigkilled_sampling_run_rerun_answers_every_query_once(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    out = tmp_path / "s.jsonl"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), "0.3"], env=env, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        if cache_path(out).exists() and len(cache_path(out).read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    answered_before = len(cache_path(out).read_text().splitlines())
    assert 4 <= answered_before < 12 and not out.exists()
    subprocess.run(
        [sys.executable, str(script), str(out), "0"], env=env, check=True, stderr=subprocess.DEVNULL
    )
    examples = read_examples(out)
    assert sorted(ex.instruction for ex in examples) == sorted(f"query {i}" for i in range(12))
    keys = [json.loads(line)["key"] for line in cache_path(out).read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 12


def test_load_queries_from_a_datasets_directory(tmp_path: Path) -> None:
    from datasets import Dataset

    rows = [{"instruction": f"Do {i}", "input": "", "output": f"Done {i}"} for i in range(5)]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    queries = load_queries(tmp_path / "ds", limit=3)
    assert [q.instruction for q in queries] == ["Do 0", "Do 1", "Do 2"] and queries[0].response == "Done 0"


# ---------------------------------------------------------------- built-in queries


def test_builtin_queries_are_distinct_varied_and_seeded() -> None:
    queries = builtin_queries(600, seed=3)
    texts = [q.instruction for q in queries]
    assert len(texts) == 600 == len({t.lower() for t in texts})
    assert all(len(q.messages) == 1 and q.messages[0]["role"] == "user" for q in queries)
    assert len({q.meta["task_type"] for q in queries}) >= 15
    assert len({q.meta["topic"] for q in queries}) >= 40
    assert [q.instruction for q in builtin_queries(50, seed=3)] == texts[:50]
    assert builtin_queries(50, seed=4) != builtin_queries(50, seed=3)


# ---------------------------------------------------------------- stats


def test_distinct_n_and_histogram_by_hand() -> None:
    assert distinct_n(["a b a b"], 1) == 0.5  # 2 unique / 4
    assert distinct_n(["a b a b"], 2) == round(2 / 3, 4)  # (a b), (b a) / 3 bigrams
    hist = length_histogram(["one two", "w " * 20])
    assert hist["0-7"] == 1 and hist["16-31"] == 1 and sum(hist.values()) == 2


def test_near_duplicates_and_spread(tmp_path: Path) -> None:
    base = "the quick brown fox jumps over the lazy dog near the old river bank today"
    texts = [base, base + " again", "completely different words about quantum chromodynamics and lattices"]
    assert near_duplicate_rate(texts) == round(2 / 3, 4)
    vectors = tfidf_vectors(texts)
    assert all(abs(sum(v * v for v in vec.values()) - 1) < 1e-9 for vec in vectors)
    rows = [Example(messages=[*user(t), {"role": "assistant", "content": t.upper()}]) for t in texts]
    write_jsonl(tmp_path / "d.jsonl", rows)
    stats = dataset_stats(read_examples(tmp_path / "d.jsonl"), embedder=None)
    assert stats["records"] == 3 and stats["instruction"]["embedding_spread"]["method"] == "tfidf"
    same = dataset_stats([rows[0], rows[0]], embedder=None)
    assert same["instruction"]["embedding_spread"]["spread"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < stats["instruction"]["embedding_spread"]["spread"] <= 1


def test_stats_cli_prints_json(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from delia.cli import _register_all, app

    rows = [
        Example(messages=[*user(f"question number {i}"), {"role": "assistant", "content": "x y"}])
        for i in range(4)
    ]
    write_jsonl(tmp_path / "d.jsonl", rows)
    _register_all()
    result = CliRunner().invoke(app, ["synth", "stats", str(tmp_path / "d.jsonl"), "--json", "--no-embed"])
    assert result.exit_code == 0, result.output
    parsed = json.loads(result.output)
    assert parsed["records"] == 4 and parsed["response"]["distinct_1"] == 0.25


# ---------------------------------------------------------------- the embedded model


@pytest.mark.slow
def test_embedded_model_answers_a_few_queries(tmp_path: Path) -> None:
    backend = LocalBackend.from_spec("smollm2-135m-instruct", batch_size=4, progress=False)
    cfg = SampleConfig(sampling=SamplingConfig(max_new_tokens=16))
    queries = builtin_queries(3, seed=0)
    examples = sample_diverse(queries, backend, cfg, tmp_path / "s.jsonl", "smollm2-135m-instruct")
    assert len(examples) >= 2 and all(ex.response.strip() for ex in examples)
    assert "<|im_end|>" not in "".join(ex.response for ex in examples)
    manifest = json.loads(manifest_path(tmp_path / "s.jsonl").read_text())
    assert manifest["tokens_per_second"] > 0 and manifest["new_tokens_this_run"] > 0
