"""A small blocking JSON-over-HTTP client (standard library only) for OpenAI-compatible servers.

Retries with exponential backoff on connection errors, timeouts, 429 and 5xx; other HTTP errors
fail at once with the server's message. A streamed answer (server-sent events) is retried only
until its response starts, so text is never duplicated. Callers run it in a worker thread.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from planner.exceptions import EngineError

log = structlog.get_logger(__name__)

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class HttpSettings:
    timeout_s: float = 30.0
    retries: int = 2
    backoff_s: float = 0.25  # first wait; doubles each retry
    api_key: str | None = None


class JsonClient:
    """POST/GET JSON to one base URL (``http://host:8000/v1``)."""

    def __init__(
        self, base_url: str, settings: HttpSettings, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise EngineError(f"server URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.settings = settings
        self._sleep = sleep

    def get(self, path: str) -> Any:
        with self._open("GET", path, None) as resp:
            return json.load(resp)

    def post(self, path: str, payload: dict[str, Any]) -> Any:
        with self._open("POST", path, payload) as resp:
            return json.load(resp)

    def stream(self, path: str, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST and yield each server-sent ``data:`` JSON event until ``[DONE]``."""
        with self._open("POST", path, payload) as resp:
            for raw in resp:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue  # comments, event names, keep-alive blank lines
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                try:
                    event = json.loads(data)
                except json.JSONDecodeError as exc:
                    raise EngineError(f"{self.base_url}{path}: bad event {data[:80]!r}") from exc
                if "error" in event:
                    raise EngineError(f"{self.base_url}{path}: server error in stream: {event['error']}")
                yield event

    # ---- internals ---------------------------------------------------------------------------
    def _request(self, method: str, path: str, payload: dict[str, Any] | None) -> urllib.request.Request:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.settings.api_key:
            headers["Authorization"] = f"Bearer {self.settings.api_key}"
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        return urllib.request.Request(f"{self.base_url}{path}", data=body, headers=headers, method=method)

    def _open(self, method: str, path: str, payload: dict[str, Any] | None) -> Any:
        """The response once its headers arrived, retrying what a retry can fix."""
        url = f"{self.base_url}{path}"
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return urllib.request.urlopen(
                    self._request(method, path, payload), timeout=self.settings.timeout_s
                )
            except urllib.error.HTTPError as exc:
                detail = _error_text(exc)
                if exc.code not in RETRY_STATUS or attempt == attempts:
                    raise EngineError(f"{method} {url}: HTTP {exc.code}: {detail}") from exc
                reason = f"HTTP {exc.code}: {detail}"
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if attempt == attempts:
                    raise EngineError(
                        f"{method} {url}: {type(exc).__name__}: {exc} (after {attempts} tries)"
                    ) from exc
                reason = f"{type(exc).__name__}: {exc}"
            wait = self.settings.backoff_s * 2 ** (attempt - 1)
            log.warning("http.retry", url=url, attempt=attempt, reason=reason, wait_s=wait)
            self._sleep(wait)
        raise AssertionError("unreachable")


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read().decode("utf-8", "replace")
    except OSError:
        return exc.reason or ""
    try:
        err = json.loads(body).get("error", body)
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)[:200]
    except (json.JSONDecodeError, AttributeError):
        return body[:200]
