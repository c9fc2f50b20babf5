"""A fake OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

Plain asyncio HTTP/1.1 (keep-alive) in a background thread, so it needs nothing beyond the
standard library. It answers ``POST /v1/chat/completions`` deterministically from the request,
counts the calls it served per request key, and injects faults on demand: ``"429"`` (with
``Retry-After``), ``"500"``, ``"timeout"`` (never answers, then closes), ``"malformed"`` (200
with broken JSON) and ``"drop"`` (closes the connection without a reply). ``hold_after(n)``
parks every request after the n-th success until ``release()``, to freeze a run mid-flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

FAULTS = ("429", "500", "timeout", "malformed", "drop")


def request_key(body: dict[str, Any]) -> str:
    """What identifies a request for counting: model, messages, sampling and seed."""
    ident = {k: body.get(k) for k in ("model", "messages", "temperature", "max_tokens", "seed")}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def reply_text(body: dict[str, Any]) -> str:
    """A deterministic reply: a score tag for rubric prompts, an answer tag for MMLU prompts."""
    h = int(request_key(body)[:8], 16)
    text_in = " ".join(str(m.get("content", "")) for m in body.get("messages", []))
    if "<score>" in text_in:
        return f"Considered the rubric. <score>{1 + h % 5}</score>"
    if "<answer>" in text_in:
        return f"<answer>{'ABCD'[h % 4]}</answer>"
    system = [m for m in body.get("messages", []) if m.get("role") == "system"]
    tag = " (steered by prompt)" if system else ""
    return f"Fake reply {h:08x}{tag}."


@dataclass
class _Fault:
    kind: str
    remaining: int
    retry_after: float | None
    match: str | None


class FakeOpenAIServer:
    """Start with ``with FakeOpenAIServer() as server:``; ``server.url`` is the base URL."""

    def __init__(self, latency: float = 0.0, api_key: str | None = None,
                 timeout_hang: float = 30.0) -> None:
        self.latency = latency
        self.api_key = api_key
        self.timeout_hang = timeout_hang
        self.port = 0
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()  # requests received per key (faults included)
        self.successes: Counter[str] = Counter()  # 200 replies fully written per key
        self.faults_served: Counter[str] = Counter()
        self.unauthorized = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests = 0
        self._faults: list[_Fault] = []
        self._hold_after: int | None = None
        self._admitted = 0
        self._held = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._release: asyncio.Event | None = None
        self._drop_held = True
        self._ready = threading.Event()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # control ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def inject(self, kind: str, count: int = 1, retry_after: float | None = None,
               match: str | None = None) -> None:
        """The next ``count`` requests (whose body contains ``match``, if given) get fault
        ``kind``."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {FAULTS}")
        with self._lock:
            self._faults.append(_Fault(kind, count, retry_after, match))

    def hold_after(self, n: int) -> None:
        """After ``n`` successful replies, park further requests until :meth:`release`."""
        self._hold_after = n

    def release(self, drop: bool = True) -> None:
        """Let parked requests go: closed without reply (``drop``) or answered."""
        self._drop_held = drop
        self._hold_after = None
        loop, ev = self._loop, self._release
        if loop is not None and ev is not None:
            loop.call_soon_threadsafe(ev.set)

    @property
    def held(self) -> int:
        return self._held

    @property
    def total_successes(self) -> int:
        with self._lock:
            return sum(self.successes.values())

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()
            self.successes.clear()
            self.faults_served.clear()
            self.requests = 0
            self.max_in_flight = 0
            self.unauthorized = 0

    # lifecycle ----------------------------------------------------------------------------------
    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(target=self._run, name="fake-openai", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        self.release(drop=True)

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._writers):
                w.close()
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.wait(tasks, timeout=2) if tasks else None
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._release = asyncio.Event()

        async def start() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024)
            self.port = self._server.sockets[0].getsockname()[1]

        loop.run_until_complete(start())
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    # HTTP ---------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                keep = await self._respond(method, path, headers, body, writer)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError,
                asyncio.CancelledError):
            pass  # a cancelled handler ends quietly, so shutdown prints nothing
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _respond(self, method: str, path: str, headers: dict[str, str], raw: bytes,
                       writer: asyncio.StreamWriter) -> bool:
        if method != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            await self._send(writer, 404, {"error": {"message": f"no route {method} {path}"}})
            return True
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            with self._lock:
                self.unauthorized += 1
            await self._send(writer, 401, {"error": {"message": "bad key", "type": "auth"}})
            return True
        body = json.loads(raw)
        key = request_key(body)
        text = raw.decode("utf-8", "replace")
        with self._lock:
            self.requests += 1
            self.calls[key] += 1
            fault = None
            for f in self._faults:
                if f.remaining > 0 and (f.match is None or f.match in text):
                    f.remaining -= 1
                    fault = f
                    self.faults_served[f.kind] += 1
                    break
        if fault is not None:
            return await self._fault(fault, writer)
        with self._lock:  # admit at most hold_after answers, counting those still in latency
            hold = self._hold_after is not None and self._admitted >= self._hold_after
            if not hold:
                self._admitted += 1
        if hold:
            self._held += 1
            assert self._release is not None
            await self._release.wait()
            self._held -= 1
            if self._drop_held:
                return False
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            reply = reply_text(body)
            payload = {
                "id": f"chatcmpl-{key[:12]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": reply}}],
                "usage": {"prompt_tokens": len(text.split()),
                          "completion_tokens": len(reply.split()),
                          "total_tokens": len(text.split()) + len(reply.split())},
            }
            await self._send(writer, 200, payload)
        finally:
            self.in_flight -= 1
        with self._lock:
            self.successes[key] += 1
        return True

    async def _fault(self, fault: _Fault, writer: asyncio.StreamWriter) -> bool:
        if fault.kind == "429":
            extra = {} if fault.retry_after is None else {"retry-after": f"{fault.retry_after:g}"}
            await self._send(writer, 429, {"error": {"message": "Rate limit reached",
                                                     "type": "rate_limit"}}, extra)
            return True
        if fault.kind == "500":
            await self._send(writer, 500, {"error": {"message": "boom", "type": "server"}})
            return True
        if fault.kind == "malformed":
            await self._send_raw(writer, 200, b'{"id": "x", "choices": [ {"mess', {})
            return True
        if fault.kind == "timeout":
            await asyncio.sleep(self.timeout_hang)
        return False  # "drop" and "timeout": close without a reply

    async def _send(self, writer: asyncio.StreamWriter, status: int, payload: dict[str, Any],
                    extra: dict[str, str] | None = None) -> None:
        await self._send_raw(writer, status, json.dumps(payload).encode(), extra or {})

    @staticmethod
    async def _send_raw(writer: asyncio.StreamWriter, status: int, data: bytes,
                        extra: dict[str, str]) -> None:
        reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
                  500: "Internal Server Error"}.get(status, "Status")
        head = [f"HTTP/1.1 {status} {reason}", "content-type: application/json",
                f"content-length: {len(data)}", "connection: keep-alive"]
        head += [f"{k}: {v}" for k, v in extra.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await writer.drain()
