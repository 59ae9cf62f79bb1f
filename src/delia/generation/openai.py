"""OpenAI-compatible chat completions over HTTP (vLLM's server, llama.cpp's server, hosted APIs).

stdlib urllib rather than httpx: httpx is not a dependency, and one JSON POST per prompt needs nothing more.
Concurrency is a bounded thread pool; 429 and 5xx answers are retried with exponential backoff.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tqdm.auto import tqdm

from delia.core.config import SamplingConfig
from delia.core.errors import ConfigError, DeliaError
from delia.core.registry import BACKENDS
from delia.generation.base import BackendRequest, GenerationStats, Message

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0


def read_api_key(env_name: str | None) -> str | None:
    """The key from the named environment variable; the error names the variable, never a value."""
    if not env_name:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise DeliaError(
            f"environment variable {env_name} (named by backend.api_key_env) is not set or empty"
        )
    return key


def chat_completions_url(base_url: str) -> str:
    """`http://host:8000/v1` -> `http://host:8000/v1/chat/completions` (a full endpoint URL is kept)."""
    base = base_url.rstrip("/")
    return base if base.endswith("/chat/completions") else f"{base}/chat/completions"


@BACKENDS.register("openai")
def openai_backend(request: BackendRequest) -> OpenAIBackend:
    """The server does the generating: a loaded model, the device and the dtype are not used."""
    cfg = request.cfg
    if not cfg.base_url:
        raise ConfigError(
            "backend.base_url", "the openai backend needs a base URL, e.g. http://127.0.0.1:8000/v1"
        )
    return OpenAIBackend(
        cfg.base_url,
        request.model_spec,
        api_key_env=cfg.api_key_env,
        concurrency=cfg.concurrency,
        timeout_s=cfg.timeout_s,
        progress=request.progress,
    )


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        concurrency: int = 4,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        progress: bool = True,
    ) -> None:
        if concurrency < 1:
            raise DeliaError(f"backend concurrency must be >= 1, got {concurrency}")
        self.url = chat_completions_url(base_url)
        self.model = model
        self._api_key = read_api_key(api_key_env)
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.progress = progress
        self.stats = GenerationStats()
        self.last_new_tokens: list[int] = []
        self.stop_strings: list[str] = []  # sent as the request's "stop"

    def __repr__(self) -> str:  # the key stays out of reprs and logs
        return f"OpenAIBackend(url={self.url!r}, model={self.model!r}, concurrency={self.concurrency})"

    def generate(
        self, prompts: list[list[Message]], sampling: SamplingConfig, seeds: list[int] | None = None
    ) -> list[str]:
        """`seeds`: one per prompt, sent as that request's `seed` (else every request gets sampling.seed)."""
        start = time.perf_counter()
        results: list[tuple[str, int]] = [("", 0)] * len(prompts)
        bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not self.progress, leave=False)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            per_prompt = (
                [sampling] * len(prompts)
                if seeds is None
                else [sampling.model_copy(update={"seed": seed}) for seed in seeds]
            )
            futures = [pool.submit(self._complete, p, s) for p, s in zip(prompts, per_prompt, strict=True)]
            try:
                for index, future in enumerate(futures):
                    results[index] = future.result()
                    bar.update(1)
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
            finally:
                bar.close()
        self.last_new_tokens = [count for _, count in results]
        self.stats.add_call(self.last_new_tokens, start)
        return [text for text, _ in results]

    def _payload(self, prompt: list[Message], sampling: SamplingConfig) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": prompt,
            "temperature": sampling.temperature,
            "max_tokens": sampling.max_new_tokens,
            "seed": sampling.seed,
        }
        if sampling.temperature > 0:
            body["top_p"] = sampling.top_p
        if self.stop_strings:
            body["stop"] = list(self.stop_strings)
        return json.dumps(body).encode("utf-8")

    def _request(self, payload: bytes) -> urllib.request.Request:
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return urllib.request.Request(self.url, data=payload, headers=headers, method="POST")

    def _complete(self, prompt: list[Message], sampling: SamplingConfig) -> tuple[str, int]:
        payload = self._payload(prompt, sampling)
        for attempt in range(self.max_retries + 1):
            try:
                with urllib.request.urlopen(self._request(payload), timeout=self.timeout_s) as response:
                    text = self._redact(response.read().decode("utf-8"))
                return parse_completion(json.loads(text), self.url)
            except urllib.error.HTTPError as err:
                detail = self._redact(err.read().decode("utf-8", "replace"))[:200]
                if err.code not in RETRY_STATUSES or attempt == self.max_retries:
                    raise DeliaError(f"{self.url} answered HTTP {err.code}: {detail}") from None
                time.sleep(self._delay(attempt, err.headers.get("Retry-After")))
            except TimeoutError:
                raise DeliaError(
                    f"{self.url} did not answer within {self.timeout_s:g} s (backend.timeout_s)"
                ) from None
            except urllib.error.URLError as err:
                if isinstance(err.reason, TimeoutError):
                    raise DeliaError(f"{self.url} did not answer within {self.timeout_s:g} s") from None
                raise DeliaError(f"cannot reach {self.url}: {err.reason}") from None
            except json.JSONDecodeError:
                raise DeliaError(f"{self.url} answered with something that is not JSON") from None
        raise AssertionError("unreachable")

    def _redact(self, text: str) -> str:
        """A server may echo the request's headers in an error body: the key never reaches a message."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), MAX_BACKOFF_S)
            except ValueError:
                pass
        return min(self.backoff_s * 2**attempt, MAX_BACKOFF_S)


def parse_completion(body: dict[str, Any], url: str) -> tuple[str, int]:
    """(text, completion tokens) from a chat completions answer; 0 tokens when the server gives no usage."""
    try:
        text = body["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise DeliaError(f"{url}: the answer has no choices[0].message.content: {str(body)[:200]}") from None
    usage = body.get("usage") or {}
    return text.strip(), int(usage.get("completion_tokens") or 0)
