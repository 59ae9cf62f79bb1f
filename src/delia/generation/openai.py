"""OpenAI-compatible chat completions over HTTP (vLLM, llama.cpp, `transformers serve`, hosted APIs).

stdlib urllib rather than httpx: httpx is not a dependency, and one JSON POST per prompt needs nothing more.
Concurrency is a bounded thread pool. Transient failures are retried with exponential backoff: 429 and 5xx
answers, a connection closed before the answer was complete, and (fewer times: each try costs a whole
timeout_s) a request past the timeout. A refused connection, any other HTTP error or an answer that is not a
chat completion fails at once, as one line. When some prompts of a call fail, the answers that did arrive are
not lost: `generate` raises `PartialGeneration` holding them.
"""

from __future__ import annotations

import difflib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from tqdm.auto import tqdm

from delia.core.config import SamplingConfig
from delia.core.errors import ConfigError, DeliaError
from delia.core.registry import BACKENDS
from delia.generation.base import BackendRequest, GenerationStats, Message, PartialGeneration

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRIES = 5  # tries after the first, for 429/5xx answers and dropped connections
TIMEOUT_RETRIES = 1  # fewer for a request past backend.timeout_s: each such try costs a whole timeout
BACKOFF_S = 1.0  # the wait before the first retry, doubled for each next one
MAX_BACKOFF_S = 30.0
# The server closed the connection before the whole answer arrived (it crashed or restarted mid-answer).
# http.client raises these from getresponse() and read(), outside urllib's URLError wrapping.
DROPPED = (http.client.IncompleteRead, ConnectionResetError, ConnectionAbortedError, BrokenPipeError)


class _Transient(Exception):
    """One failed try worth repeating; `message` is what the user reads when no try succeeds."""

    def __init__(self, message: str, retry_after: str | None = None, timed_out: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.timed_out = timed_out


def read_api_key(env_name: str | None) -> str | None:
    """The key from the named environment variable. A name that is not a set variable is never echoed:
    it may be the key itself, pasted where its variable's name belongs."""
    if not env_name:
        return None
    if env_name not in os.environ:
        raise ConfigError("backend.api_key_env", unset_variable_message(env_name))
    key = os.environ[env_name]
    if not key:
        raise DeliaError(f"environment variable {env_name} (named by backend.api_key_env) is empty")
    return key


def unset_variable_message(value: str) -> str:
    close = difflib.get_close_matches(value, list(os.environ), n=1, cutoff=0.8)
    hint = f"; did you mean {close[0]}?" if close else ""
    return (
        "names no environment variable that is set (the value is not shown, in case it is the key "
        f"itself): put the key in a variable, e.g. OPENAI_API_KEY, and give that variable's name{hint}"
    )


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
        max_retries=MAX_RETRIES,
        timeout_retries=TIMEOUT_RETRIES,
        backoff_s=BACKOFF_S,
        progress=request.progress,
    )


class OpenAIBackend:
    name = "openai"
    # Each answer depends on its own prompt and seed, not on the other prompts of a call: a sampler resuming
    # after a failure may send only the prompts still unanswered.
    batch_invariant = True

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        concurrency: int = 4,
        timeout_s: float = 120.0,
        max_retries: int = MAX_RETRIES,
        timeout_retries: int = TIMEOUT_RETRIES,
        backoff_s: float = BACKOFF_S,
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
        self.timeout_retries = timeout_retries
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
        """`seeds`: one per prompt, sent as that request's `seed` (else every request gets sampling.seed).

        Raises PartialGeneration (a DeliaError) when a prompt fails after its retries; it holds the
        answers of the prompts that did not fail."""
        start = time.perf_counter()
        per_prompt = (
            [sampling] * len(prompts)
            if seeds is None
            else [sampling.model_copy(update={"seed": seed}) for seed in seeds]
        )
        answers, failure = self._complete_all(prompts, per_prompt)
        self.stats.add_call([count for _, count in answers.values()], start)
        if failure is not None:
            arrived = f"; {len(answers)} of {len(prompts)} prompts answered" if len(prompts) > 1 else ""
            texts = {index: text for index, (text, _) in answers.items()}
            counts = {index: count for index, (_, count) in answers.items()}
            raise PartialGeneration(f"{failure}{arrived}", texts, counts)
        self.last_new_tokens = [answers[index][1] for index in range(len(prompts))]
        return [answers[index][0] for index in range(len(prompts))]

    def _complete_all(
        self, prompts: list[list[Message]], per_prompt: list[SamplingConfig]
    ) -> tuple[dict[int, tuple[str, int]], DeliaError | None]:
        """(text, tokens) by prompt index for every answer that arrived, and the first failure. After a
        failure the prompts not yet sent are dropped and those in flight are waited for: their answers
        are kept."""
        answers: dict[int, tuple[str, int]] = {}
        failure: DeliaError | None = None
        bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not self.progress, leave=False)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {
                pool.submit(self._complete, prompt, sampling): index
                for index, (prompt, sampling) in enumerate(zip(prompts, per_prompt, strict=True))
            }
            try:
                for future in as_completed(futures):
                    if future.cancelled():
                        continue
                    try:
                        answers[futures[future]] = future.result()
                    except DeliaError as err:
                        failure = failure or err
                        for pending in futures:
                            pending.cancel()
                        continue
                    bar.update(1)
            except BaseException:
                for pending in futures:
                    pending.cancel()
                raise
            finally:
                bar.close()
        return answers, failure

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
        """One prompt's (text, tokens), retrying transient failures; a one-line DeliaError when no try
        succeeds. Timeouts have their own, smaller, retry budget."""
        payload = self._payload(prompt, sampling)
        timeouts = others = 0
        while True:
            try:
                return self._try_once(payload)
            except _Transient as problem:
                timeouts += problem.timed_out
                others += not problem.timed_out
                if timeouts > self.timeout_retries or others > self.max_retries:
                    tries = timeouts + others
                    raise DeliaError(problem.message + (f" ({tries} tries)" if tries > 1 else "")) from None
                time.sleep(self._delay(timeouts + others - 1, problem.retry_after))

    def _try_once(self, payload: bytes) -> tuple[str, int]:
        try:
            with urllib.request.urlopen(self._request(payload), timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise self._http_problem(err) from None
        except urllib.error.URLError as err:  # raised while connecting or sending
            raise self._connection_problem(err.reason) from None
        except (TimeoutError, *DROPPED) as err:  # raised while waiting for or reading the answer
            raise self._connection_problem(err) from None
        try:
            body = json.loads(self._redact(raw.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise DeliaError(f"{self.url} answered with something that is not JSON") from None
        return parse_completion(body, self.url)

    def _http_problem(self, err: urllib.error.HTTPError) -> Exception:
        try:
            body = err.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):  # the error body itself was cut off
            body = ""
        detail = " ".join(self._redact(body).split())[:200]
        message = f"{self.url} answered HTTP {err.code}: {detail}"
        if err.code in RETRY_STATUSES:
            return _Transient(message, err.headers.get("Retry-After"))
        return DeliaError(message)

    def _connection_problem(self, reason: object) -> Exception:
        if isinstance(reason, TimeoutError):
            message = f"{self.url} did not answer within {self.timeout_s:g} s (backend.timeout_s)"
            return _Transient(message, timed_out=True)
        if isinstance(reason, DROPPED):
            return _Transient(f"{self.url} closed the connection before its answer was complete")
        return DeliaError(f"cannot reach {self.url}: {reason} (is the server up? backend.base_url)")

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
