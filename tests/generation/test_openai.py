"""The OpenAI-compatible backend against a fake chat-completions server on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from delia.core.config import BackendConfig, SamplingConfig
from delia.core.errors import DeliaError
from delia.generation import make_backend
from delia.generation.openai import OpenAIBackend


class FakeServer:
    """Serves /v1/chat/completions. `script` is a list of actions per request: 'ok', '429', '500', 'slow'."""

    def __init__(self) -> None:
        self.script: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append(
                        {"path": self.path, "auth": self.headers.get("Authorization"), **body}
                    )
                    action = server.script.pop(0) if server.script else "ok"
                if action == "slow":
                    time.sleep(1.5)
                if action in ("429", "500"):
                    self.send_response(int(action))
                    self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": "busy"}')
                    return
                text = "echo: " + body["messages"][-1]["content"]
                answer = {"choices": [{"message": {"content": text}}], "usage": {"completion_tokens": 3}}
                payload = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(payload)

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
    backend = OpenAIBackend(server.url, "tiny", concurrency=1, backoff_s=0.01, progress=False)
    assert backend.generate([prompt("hello")], SAMPLING) == ["echo: hello"]
    assert len(server.requests) == 3


def test_gives_up_after_max_retries_naming_the_url(server: FakeServer) -> None:
    server.script = ["429"] * 5
    backend = OpenAIBackend(server.url, "tiny", concurrency=1, max_retries=2, backoff_s=0.01, progress=False)
    with pytest.raises(DeliaError, match=r"127\.0\.0\.1.*HTTP 429"):
        backend.generate([prompt("hello")], SAMPLING)
    assert len(server.requests) == 3


def test_timeout_is_a_delia_error_naming_the_url(server: FakeServer) -> None:
    server.script = ["slow"]
    backend = OpenAIBackend(server.url, "tiny", timeout_s=0.3, progress=False)
    with pytest.raises(DeliaError, match=r"127\.0\.0\.1.*did not answer within 0\.3 s"):
        backend.generate([prompt("hello")], SAMPLING)


def test_refused_connection_and_missing_key_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    dead = FakeServer()
    url = dead.url
    dead.close()  # nothing listens on that port now
    with pytest.raises(DeliaError, match=r"cannot reach http://127\.0\.0\.1"):
        OpenAIBackend(url, "tiny", progress=False).generate([prompt("x")], SAMPLING)
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(DeliaError, match="NO_SUCH_KEY_VAR"):
        make_backend(BackendConfig(kind="openai", base_url=url, api_key_env="NO_SUCH_KEY_VAR"), "tiny")
