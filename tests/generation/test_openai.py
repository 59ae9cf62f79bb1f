"""The OpenAI-compatible backend against a fake chat-completions server on 127.0.0.1: answers, retries,
failures (slow, refused, dropped mid-answer) as one line, and the sampler keeping every answer that
arrived."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from delia.core.config import BackendConfig, SampleConfig, SamplingConfig
from delia.core.errors import ConfigError, DeliaError
from delia.core.example import Example
from delia.generation import make_backend
from delia.generation.base import PartialGeneration
from delia.generation.openai import OpenAIBackend
from delia.synth.cache import AnswerCache
from delia.synth.sample import cache_path, manifest_path, sample_diverse


class FakeServer:
    """Serves /v1/chat/completions. `script` is a list of actions, one per request: 'ok', '429', '500',
    'slow' (answers after 1.5 s), 'drop' (closes the connection without answering) or 'cut' (sends half of
    the answer, then closes). A prompt containing `poison` is always dropped."""

    def __init__(self) -> None:
        self.script: list[str] = []
        self.poison: str | None = None
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = body["messages"][-1]["content"]
                with server.lock:
                    server.requests.append(
                        {"path": self.path, "auth": self.headers.get("Authorization"), **body}
                    )
                    action = server.script.pop(0) if server.script else "ok"
                if server.poison and server.poison in question:
                    action = "drop"
                if action == "drop":
                    return  # the handler closes the connection: the client reads no status line
                if action == "slow":
                    time.sleep(1.5)
                if action in ("429", "500"):
                    self.send_response(int(action))
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": "busy"}')
                    return
                answer = {
                    "choices": [{"message": {"content": f"echo: {question}"}}],
                    "usage": {"completion_tokens": 3},
                }
                payload = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(payload[: len(payload) // 2] if action == "cut" else payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server() -> Iterator[FakeServer]:
    fake = FakeServer()
    yield fake
    fake.close()


def prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def quick(url: str, **options: Any) -> OpenAIBackend:
    """A backend that waits 10 ms before a retry instead of seconds."""
    return OpenAIBackend(url, "tiny", backoff_s=0.01, progress=False, **options)


SAMPLING = SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=12, seed=5)


def test_answers_in_order_with_key_from_env(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_KEY", "sk-secret")
    backend = OpenAIBackend(server.url, "tiny", api_key_env="FAKE_KEY", concurrency=3, progress=False)
    out = backend.generate([prompt(f"q{i}") for i in range(7)], SAMPLING)
    assert out == [f"echo: q{i}" for i in range(7)]
    assert backend.last_new_tokens == [3] * 7 and backend.stats.new_tokens == 21
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == "Bearer sk-secret"
    assert first["model"] == "tiny" and first["max_tokens"] == 12 and first["top_p"] == 0.9
    assert "sk-secret" not in repr(backend)
    assert "stop" not in first
    backend.stop_strings = ["\n\n"]
    backend.generate([prompt("stop me")], SAMPLING)
    assert server.requests[-1]["stop"] == ["\n\n"]


def test_retries_429_then_succeeds(server: FakeServer) -> None:
    server.script = ["429", "500", "ok"]
    assert quick(server.url, concurrency=1).generate([prompt("hello")], SAMPLING) == ["echo: hello"]
    assert len(server.requests) == 3


def test_gives_up_after_max_retries_naming_the_url(server: FakeServer) -> None:
    server.script = ["429"] * 5
    with pytest.raises(DeliaError, match=r"127\.0\.0\.1.*HTTP 429.*\(3 tries\)"):
        quick(server.url, concurrency=1, max_retries=2).generate([prompt("hello")], SAMPLING)
    assert len(server.requests) == 3


def test_a_connection_dropped_before_or_during_the_answer_is_retried(server: FakeServer) -> None:
    server.script = ["drop", "cut", "ok"]
    assert quick(server.url).generate([prompt("hello")], SAMPLING) == ["echo: hello"]
    assert len(server.requests) == 3


def test_a_connection_dropped_on_every_try_is_one_line(server: FakeServer) -> None:
    server.script = ["cut"] * 3
    with pytest.raises(DeliaError) as caught:
        quick(server.url, max_retries=2).generate([prompt("hello")], SAMPLING)
    message = str(caught.value)
    assert "closed the connection before its answer was complete (3 tries)" in message
    assert server.url in message and "\n" not in message
    assert len(server.requests) == 3


def test_a_timeout_is_retried_once_then_one_line_naming_the_key(server: FakeServer) -> None:
    server.script = ["slow", "ok"]
    assert quick(server.url, timeout_s=0.3).generate([prompt("hello")], SAMPLING) == ["echo: hello"]
    server.script = ["slow", "slow", "ok"]
    with pytest.raises(
        DeliaError, match=r"127\.0\.0\.1.*did not answer within 0\.3 s \(backend\.timeout_s\)"
    ):
        quick(server.url, timeout_s=0.3).generate([prompt("hello")], SAMPLING)
    assert len(server.requests) == 4  # two tries each: the second call gave up before the third


def test_refused_connection_and_missing_key_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = FakeServer()
    url = dead.url
    dead.close()  # nothing listens on that port now
    with pytest.raises(DeliaError, match=r"cannot reach http://127\.0\.0\.1.*backend\.base_url"):
        quick(url).generate([prompt("x")], SAMPLING)
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(ConfigError, match=r"backend\.api_key_env: names no environment variable") as caught:
        make_backend(BackendConfig(kind="openai", base_url=url, api_key_env="NO_SUCH_KEY_VAR"), "tiny")
    assert "NO_SUCH_KEY_VAR" not in str(caught.value)  # an unset name may be a pasted key: never echoed


def test_a_misspelt_key_variable_gets_a_suggestion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DELIA_TEST_OPENAI_KEY", "sk-x")
    monkeypatch.delenv("DELIA_TEST_OPENIA_KEY", raising=False)
    with pytest.raises(ConfigError, match="did you mean DELIA_TEST_OPENAI_KEY"):
        OpenAIBackend("http://127.0.0.1:9/v1", "m", api_key_env="DELIA_TEST_OPENIA_KEY")
    monkeypatch.setenv("DELIA_TEST_EMPTY_KEY", "")
    with pytest.raises(DeliaError, match=r"DELIA_TEST_EMPTY_KEY .* is empty"):  # a set variable: named
        OpenAIBackend("http://127.0.0.1:9/v1", "m", api_key_env="DELIA_TEST_EMPTY_KEY")


def test_in_flight_answers_arrive_after_a_failure(server: FakeServer) -> None:
    # Four requests in flight at once: the one that fails does not take the other three with it.
    server.poison = "bad"
    prompts = [prompt("q0"), prompt("bad q1"), prompt("q2"), prompt("q3")]
    with pytest.raises(PartialGeneration, match=r"\(2 tries\); 3 of 4 prompts answered$") as caught:
        quick(server.url, concurrency=4, max_retries=1).generate(prompts, SAMPLING)
    assert caught.value.answers == {0: "echo: q0", 2: "echo: q2", 3: "echo: q3"}
    assert caught.value.new_tokens == {0: 3, 2: 3, 3: 3}


# ------------------------------------------------------------------- the sampler over a failing server


def queries(n: int, poisoned: int) -> list[Example]:
    """`question 0` ... with a `!` in place of the space for the poisoned one: all the same length, so the
    sampler's chunks (longest first, stable) follow the queries' order."""
    texts = [f"question{'!' if i == poisoned else ' '}{i}" for i in range(n)]
    return [Example(messages=[{"role": "user", "content": text}]) for text in texts]


def sample_config(url: str, batch_size: int) -> SampleConfig:
    return SampleConfig(
        backend=BackendConfig(kind="openai", base_url=url, batch_size=batch_size),
        sampling=SamplingConfig(max_new_tokens=8, seed=1),
    )


def test_the_sampler_keeps_every_answer_that_arrived_and_resumes(server: FakeServer, tmp_path: Path) -> None:
    server.poison = "!"
    out, asked = tmp_path / "diverse.jsonl", queries(10, poisoned=4)
    cfg = sample_config(server.url, batch_size=4)  # chunks 0-3, 4-7 (4 fails), 8-9
    with pytest.raises(DeliaError, match=r"closed the connection.*kept in .*diverse\.cache\.jsonl: rerun"):
        sample_diverse(asked, quick(server.url, concurrency=4, max_retries=1), cfg, out, "tiny")
    with AnswerCache(cache_path(out)) as cache:
        kept = sorted(row["completion"] for row in cache.answers.values())
    # The first chunk and the three others of the failed chunk; the last chunk was never reached.
    assert kept == [f"echo: question {i}" for i in (0, 1, 2, 3, 5, 6, 7)]
    server.poison, before = None, len(server.requests)
    examples = sample_diverse(asked, quick(server.url, concurrency=4), cfg, out, "tiny")
    resent = sorted(request["messages"][-1]["content"] for request in server.requests[before:])
    assert resent == ["question 8", "question 9", "question!4"]  # only what the cache lacked
    assert [ex.response for ex in examples] == [f"echo: {q.messages[0]['content']}" for q in asked]
    counts = json.loads(manifest_path(out).read_text())["counts"]
    assert counts["from_cache"] == 7 and counts["answered_now"] == 3 and counts["written"] == 10
