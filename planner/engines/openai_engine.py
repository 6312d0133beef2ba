"""``openai:URL``: an OpenAI-compatible server (trtllm-serve, vLLM, SGLang); URL like ``http://host:8000/v1``.

- ranking: ``POST /completions`` on the option-scoring prompts rendered locally with the chat
  template (``settings.tokenizer``; else Qwen2.5 ChatML by hand), all letter orders in one
  request, ``max_tokens=1, temperature=0, logprobs=20``; the letters' log-probs come from the
  top log-probs of the first generated token (a letter not listed gets a floor log-prob).
- text: ``POST /chat/completions`` with ``stream=True`` (server-sent events), capped.
- the served model name is ``settings.model_name``, else the first of ``GET /models``.
- timeouts, and retries with backoff on connection errors, 429 and 5xx (``http_client``); the API
  key, if any, comes from the environment variable named by ``settings.api_key_env``.

IndirNHFM only: images cannot go through ``/completions`` prompts.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import structlog

from planner.engines.base import EngineSettings, near_inputs
from planner.engines.chatml import Renderer, make_renderer
from planner.engines.http_client import HttpSettings, JsonClient
from planner.engines.options import DEFAULT_FLOOR, action_scores, letters_from_top_logprobs, scoring_prompts
from planner.exceptions import EngineError
from planner.memory import NHFMemory
from planner.prior import SequencePrior
from planner.prompts import APPrompts

log = structlog.get_logger(__name__)

#: Top log-probs asked for; vLLM's default ``max_logprobs`` is 20.
TOP_LOGPROBS = 20


def top_logprobs_of(choice: dict[str, Any]) -> dict[str, float]:
    """The first generated token's top log-probs (token text -> log-prob) from a completion choice.

    Accepts the legacy completions shape (``logprobs.top_logprobs[0]`` a map) and the chat shape
    (``logprobs.content[0].top_logprobs`` a list of ``{token, logprob}``).
    """
    logprobs = choice.get("logprobs") or {}
    top = logprobs.get("top_logprobs")
    if top:
        first = top[0]
        if isinstance(first, dict):
            return {str(k): float(v) for k, v in first.items() if v is not None}
    content = logprobs.get("content")
    if content:
        return {str(e["token"]): float(e["logprob"]) for e in content[0].get("top_logprobs", [])}
    raise EngineError(f"completion choice carries no top log-probs: {str(choice)[:160]}")


class OpenAIEngine:
    name = "openai"
    instant = False
    needs_model = True
    batch_rank = False

    def __init__(
        self,
        client: JsonClient,
        settings: EngineSettings,
        render: Renderer,
        top_logprobs: int = TOP_LOGPROBS,
        floor: float = DEFAULT_FLOOR,
    ) -> None:
        self.client = client
        self.settings = settings
        self.reads_near = near_inputs(settings.variant)
        self.render = render
        self.top_logprobs = top_logprobs
        self.floor = floor
        self._model_name = settings.model_name
        self._lock = threading.Lock()
        self.model = f"{settings.model_name or '(served model)'} @ {client.base_url}"
        self.closed = False

    @property
    def model_name(self) -> str:
        """The served model's name, asked once from ``GET /models`` when not configured."""
        with self._lock:
            if self._model_name is None:
                listing = self.client.get("/models")
                models = [m["id"] for m in listing.get("data", [])]
                if not models:
                    raise EngineError(f"{self.client.base_url}/models lists no model")
                self._model_name = str(models[0])
                self.model = f"{self._model_name} @ {self.client.base_url}"
                log.info("engine.served_model", url=self.client.base_url, model=self._model_name)
            return self._model_name

    def rank(self, memory: NHFMemory) -> dict[str, float]:
        self._check_open()
        prompts = scoring_prompts(memory, "indirect", self.settings.option_orders)
        texts = [self.render(p.messages) for p in prompts]
        payload = {
            "model": self.model_name,
            "prompt": texts if len(texts) > 1 else texts[0],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": self.top_logprobs,
        }
        response = self.client.post("/completions", payload)
        choices = sorted(response.get("choices", []), key=lambda c: int(c.get("index", 0)))
        if len(choices) != len(prompts):
            raise EngineError(f"asked {len(prompts)} completions, got {len(choices)}")
        per_prompt = [letters_from_top_logprobs(top_logprobs_of(c), self.floor) for c in choices]
        return action_scores(per_prompt, prompts)

    def generate(self, memory: NHFMemory, max_tokens: int = 256) -> Iterator[str]:
        self._check_open()
        messages = list(APPrompts.plan(memory, "indirect").messages)
        payload = {
            "model": self.model_name,
            "messages": messages,
            "max_tokens": max(1, min(max_tokens, self.settings.max_new_tokens)),
            "temperature": 0,
            "stream": True,
        }
        for event in self.client.stream("/chat/completions", payload):
            for choice in event.get("choices", []):
                text = (choice.get("delta") or {}).get("content")
                if text:
                    yield text

    def close(self) -> None:
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise EngineError(f"openai engine for {self.model} is closed")


def create(arg: str, prior: SequencePrior, settings: EngineSettings) -> OpenAIEngine:
    """``openai:URL`` (the base, e.g. ``http://localhost:8000/v1``)."""
    if not arg:
        raise EngineError("the openai engine needs the server's base URL: openai:http://HOST:PORT/v1")
    if settings.variant != "indirect":
        raise EngineError(
            "the openai engine supports IndirNHFM only (variant 'indirect'): prompts are raw text"
        )
    if settings.captioner:
        raise EngineError("captions (settings.captioner) are written by the transformers engine only")
    http = HttpSettings(
        timeout_s=settings.timeout_s, retries=settings.retries, api_key=os.environ.get(settings.api_key_env)
    )
    return OpenAIEngine(JsonClient(arg, http), settings, make_renderer(settings.tokenizer))
