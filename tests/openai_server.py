"""A small OpenAI-compatible server over a local transformers model, for the engine tests.

Implements what the ``openai`` engine uses, the way vLLM answers it: ``GET /v1/models``,
``POST /v1/completions`` (``max_tokens=1`` with top ``logprobs``, prompt a string or a list) and
``POST /v1/chat/completions`` (greedy, ``stream`` true or false). Faults can be injected: a queue of
HTTP statuses to answer next, and a delay before every answer.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import torch

from planner.engines.base import EngineSettings
from planner.engines.hf_loading import load_model
from planner.engines.prefix_cache import Encoded, PrefixCachedLM
from planner.prompts import system_message


class FakeOpenAIServer:
    """Serves one model at ``self.url`` (``http://127.0.0.1:PORT/v1``) from a background thread."""

    def __init__(self, model_path: Path | str, name: str = "tiny-qwen") -> None:
        loaded = load_model(model_path, EngineSettings())
        self.lm = PrefixCachedLM(loaded, [system_message()], threads=None)
        self.tokenizer = loaded.tokenizer
        self.name = name
        self.delay_s = 0.0
        self.fail_next: list[int] = []  # HTTP statuses to answer with, first first
        self.requests: list[tuple[str, str]] = []
        self.stop_ids = [self.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.app = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-openai", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # ---- endpoints ---------------------------------------------------------------------------
    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        if int(body.get("max_tokens", 16)) != 1:
            raise _Fail(400, "this test server answers /completions with max_tokens=1 only")
        k = int(body.get("logprobs") or 0)
        logprobs = self.lm.next_token_logprobs([self._encode(p) for p in prompts])
        choices = []
        for i, row in enumerate(logprobs):
            values, ids = torch.topk(row, min(max(k, 1), row.numel()))
            top: dict[str, float] = {}
            for v, t in zip(values.tolist(), ids.tolist(), strict=True):
                top.setdefault(self.tokenizer.decode([t]), v)  # highest first: keep it on collisions
            text = self.tokenizer.decode([int(ids[0])])
            lp = {
                "tokens": [text],
                "token_logprobs": [float(values[0])],
                "top_logprobs": [top],
                "text_offset": [0],
            }
            choices.append(
                {"index": i, "text": text, "logprobs": lp if k else None, "finish_reason": "length"}
            )
        return {"id": "cmpl-test", "object": "text_completion", "model": self.name, "choices": choices}

    def chat_tokens(self, body: dict[str, Any]) -> list[str]:
        """The greedy answer as text pieces, one per generated token (pieces may be empty)."""
        text = self.lm.render(body["messages"])
        ids: list[int] = []
        pieces: list[str] = []
        emitted = ""
        for token in self.lm.greedy(self._encode(text), int(body.get("max_tokens", 64)), self.stop_ids):
            ids.append(token)
            decoded = self.tokenizer.decode(ids, skip_special_tokens=True)
            piece = "" if decoded.endswith("\ufffd") else decoded[len(emitted) :]
            emitted += piece
            pieces.append(piece)
        return pieces

    def _encode(self, text: str) -> Encoded:
        ids = torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
        n = self.lm.prefix_len
        return Encoded(ids=ids, cacheable=ids.numel() > n and torch.equal(ids[:n], self.lm.prefix_ids))


class _Fail(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the body ends when the connection closes: simple SSE

    @property
    def app(self) -> FakeOpenAIServer:
        return self.server.app  # type: ignore[attr-defined,no-any-return]

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return None

    def do_GET(self) -> None:
        self._serve(lambda: {"object": "list", "data": [{"id": self.app.name, "object": "model"}]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path == "/v1/completions":
            self._serve(lambda: self.app.completions(self._checked(body)))
        elif self.path == "/v1/chat/completions":
            self._serve(lambda: self._chat(self._checked(body)))
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def _checked(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("model") != self.app.name:
            raise _Fail(404, f"The model `{body.get('model')}` does not exist.")
        return body

    def _serve(self, answer: Any) -> None:
        app = self.app
        app.requests.append((self.command, self.path))
        if app.delay_s:
            time.sleep(app.delay_s)
        if app.fail_next:
            status = app.fail_next.pop(0)
            self._send_json(status, {"error": {"message": f"injected failure {status}"}})
            return
        try:
            result = answer()
        except _Fail as exc:
            self._send_json(exc.status, {"error": {"message": str(exc)}})
            return
        except Exception as exc:  # a server bug: answer 500 as a real server would
            self._send_json(500, {"error": {"message": f"{type(exc).__name__}: {exc}"}})
            return
        if result is not None:
            self._send_json(200, result)

    def _chat(self, body: dict[str, Any]) -> dict[str, Any] | None:
        pieces = self.app.chat_tokens(body)
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(pieces)}
            return {"id": "chat-test", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for piece in pieces:
            self._event({"id": "chat-test", "choices": [{"index": 0, "delta": {"content": piece}}]})
        self._event({"id": "chat-test", "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
        self.wfile.write(b"data: [DONE]\n\n")
        return None

    def _event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
        self.wfile.flush()

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
