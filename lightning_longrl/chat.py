"""An OpenAI-compatible chat endpoint, shared by data curation (captions, question writing) and
RL's LLM-judge reward.

Requests go through the ``openai`` SDK (its retries with exponential backoff or the server's
``Retry-After``, its time-outs), at most ``concurrency`` at once. A request that still fails after
its attempts comes back as a :class:`ChatError` in its place, so one bad request never ends a
run; the caller decides what a failure means.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger(__name__)


class ChatError(RuntimeError):
    """A request failed after all its attempts (the message says why)."""


class ChatClient:
    """``complete(requests)`` -> one reply text or :class:`ChatError` per request, in order.

    Args:
        base_url: the API root, e.g. ``http://localhost:8000/v1``.
        model: the endpoint's model name.
        api_key_env: name of the environment variable holding the API key (the key itself never
            goes into a config file); ``None``: the placeholder ``EMPTY`` is sent (servers started
            without a key, such as vLLM's by default, ignore it).
        concurrency: requests in flight at once.
        retries: further attempts after a failed request (connection errors, time-outs, HTTP 408,
            409, 429 and 5xx); other HTTP errors are not retried.
        timeout_s: limit of one attempt.
        name: how logs name this endpoint.
    """

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, concurrency: int = 4,
                 retries: int = 3, timeout_s: float = 120.0, name: str | None = None) -> None:
        import httpx
        from openai import OpenAI

        if concurrency < 1 or retries < 0 or timeout_s <= 0:
            raise ValueError(f"chat endpoint: need concurrency >= 1, retries >= 0 and timeout_s > 0, "
                             f"got {concurrency}, {retries}, {timeout_s}")
        key = None
        if api_key_env is not None:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(f"chat endpoint {base_url}: the environment variable {api_key_env} (api_key_env) is not set")
        self.model, self.concurrency, self.name = model, concurrency, name or f"openai:{model}"
        self.attempts = 0  # HTTP requests sent, retries included
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()

        def count(_request: httpx.Request) -> None:
            with self._lock:
                self.attempts += 1

        self.client = OpenAI(base_url=base_url, api_key=key or "EMPTY", max_retries=retries, timeout=timeout_s,
                             http_client=httpx.Client(timeout=timeout_s, event_hooks={"request": [count]}))

    def complete(self, requests: Sequence[dict[str, Any]]) -> list[str | ChatError]:
        """Each request is the keyword arguments of ``chat.completions.create`` without ``model``
        (``messages``, ``max_tokens``, ``temperature``, ``response_format``, ...)."""
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))

    def _one(self, request: dict[str, Any]) -> str | ChatError:
        import openai

        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            reply = self.client.chat.completions.create(model=self.model, **request)
            return (reply.choices[0].message.content or "").strip()
        except openai.APIStatusError as err:  # retried first when the status allows it
            last = f"HTTP {err.status_code}: {str(err.message)[:300]}"
        except openai.APIConnectionError as err:  # connection refused or cut, time-out: retried first
            last = f"{type(err).__name__}: {err.__cause__ or err}"
        except Exception as err:  # noqa: BLE001 - a reply of another shape: reported, not retried
            last = f"unexpected reply ({type(err).__name__}: {err})"
        finally:
            with self._lock:
                self.in_flight -= 1
        log.warning("%s: request failed: %s (HTTP requests sent so far: %d)", self.name, last, self.attempts)
        return ChatError(last)

    def close(self) -> None:
        self.client.close()
