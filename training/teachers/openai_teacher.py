"""``openai:URL``: any OpenAI-compatible chat endpoint (a GPT-4o-class API, vLLM, trtllm-serve).

``POST {URL}/chat/completions`` with the sample's messages, one request per answer (k answers:
k requests, ``seed`` = the answer's index), retries with backoff on connection errors, 429 and
5xx (``planner.engines.http_client``). The served model is ``training.distill.model`` (``--model``),
else the first of ``GET {URL}/models``; the API key comes from the environment variable named by
``api_key_env``. DirNHFM image parts are sent as base64 data URLs.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from pathlib import Path
from typing import Any

import structlog

from planner.engines.http_client import HttpSettings, JsonClient
from planner.exceptions import EngineError
from planner.prompts import Message
from training.teachers import TeacherContext, TeacherError, TeacherRequest

log = structlog.get_logger(__name__)

#: Capability: the answer depends on the sample's ground truth (see ``training.teachers``).
SEES_GROUND_TRUTH = False


def to_openai_messages(messages: tuple[Message, ...] | list[Message]) -> list[dict[str, Any]]:
    """Hugging Face chat messages -> OpenAI's: image parts become ``image_url`` data URLs."""
    out: list[dict[str, Any]] = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            parts = []
            for part in content:
                if part.get("type") == "image":
                    parts.append({"type": "image_url", "image_url": {"url": _data_url(part["image"])}})
                else:
                    parts.append({"type": "text", "text": part.get("text", "")})
            content = parts
        out.append({"role": message["role"], "content": content})
    return out


def _data_url(ref: object) -> str:
    if isinstance(ref, str) and ref.startswith(("http://", "https://", "data:")):
        return ref
    path = Path(str(ref))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TeacherError(f"cannot read keyframe {path}: {exc.strerror}") from None
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class OpenAITeacher:
    def __init__(self, url: str, ctx: TeacherContext) -> None:
        settings = ctx.settings
        http = HttpSettings(
            timeout_s=settings.timeout_s,
            retries=settings.retries,
            api_key=os.environ.get(settings.api_key_env),
        )
        try:
            self.client = JsonClient(url, http)
        except EngineError as exc:
            raise TeacherError(str(exc)) from None
        self.spec = f"openai:{url}"
        self.model = describe(url, ctx)
        self._served = settings.model
        self.calls = 0

    @property
    def served_model(self) -> str:
        if self._served is None:
            try:
                listing = self.client.get("/models")
            except EngineError as exc:
                raise TeacherError(str(exc)) from None
            models = [m.get("id") for m in listing.get("data", []) if isinstance(m, dict)]
            if not models:
                raise TeacherError(f"{self.client.base_url}/models lists no model; pass --model")
            self._served = str(models[0])
            log.info("teacher.served_model", url=self.client.base_url, model=self._served)
        return self._served

    def respond(self, request: TeacherRequest) -> str:
        payload: dict[str, Any] = {
            "model": self.served_model,
            "messages": to_openai_messages(request.messages),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.index,
        }
        self.calls += 1
        try:
            answer = self.client.post("/chat/completions", payload)
        except EngineError as exc:
            raise TeacherError(str(exc)) from None
        try:
            text = answer["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise TeacherError(
                f"{self.client.base_url}: answer without a message: {str(answer)[:160]}"
            ) from None
        return text if isinstance(text, str) else ""

    def close(self) -> None:
        return None


def describe(arg: str, ctx: TeacherContext) -> str:
    """The served model name as configured (set ``--model`` for a cache that never depends on the server)."""
    return ctx.settings.model or "(the server's first model)"


def create(arg: str, ctx: TeacherContext) -> OpenAITeacher:
    if not arg:
        raise TeacherError("the openai teacher needs the server's base URL: openai:http://HOST:PORT/v1")
    return OpenAITeacher(arg, ctx)
