"""A Goodfire-shaped HTTP server on 127.0.0.1 for tests (no internet).

Written from the request code of the installed goodfire SDK (0.3.5):
- chat: ``POST /api/inference/v1/chat/completions`` with ``messages``, ``model`` (base model id),
  ``controller`` (a Variant's ``controller.json()``: ``interventions`` of ``{"mode": "nudge",
  "features": {"features": [{"uuid", "label", "index_in_sae", ...}]}, "value"}``), sampling
  fields; reply ``ChatCompletion`` (``id, object, created, model, system_fingerprint, choices``).
- Auto Steer: ``POST /api/inference/v1/features/auto-edits`` with ``{"specification", "model"}``;
  reply ``{"edits": [[{"id", "label", "index_in_sae"}, strength], ...]}``.
- feature search: ``GET /api/inference/v1/features/search?query&page&perPage&model``; reply
  ``SearchFeatureResponse`` (``{"features": [{"id", "label", "index_in_sae", "relevance"}]}``).
- lookup: ``POST /api/inference/v1/features/lookup`` with ``{"indices", "model"}``; reply
  ``{"features": [{"uuid", "label", "index_in_sae"}]}``.
Every request needs ``Authorization: Bearer <api_key>`` (else 401, as the SDK's
``check_status_code`` expects). Goodfire publishes no OpenAPI schema, so requests are validated
against the schema the SDK's request code and pydantic interfaces document (``validate``): known
fields only, their types and ranges, supported models, SAE indices within the model's SAE and
feature uuids as the SDK sends them (32 hex digits, ``Feature.json()``'s "hex while passing
through http"); a violation is answered 422 with a FastAPI-style ``detail`` list. The server
hands out uuids in that same form. Replies are pure functions of the request, and a chat reply
names the feature edits it was given, so steering is observable. ``inject`` queues faults;
``raw`` keeps every request's method, path, query, headers and JSON body.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest

SUPPORTED_MODELS = ("meta-llama/Meta-Llama-3.1-8B-Instruct", "meta-llama/Llama-3.3-70B-Instruct")
SAE_SIZE = {SUPPORTED_MODELS[0]: 65536, SUPPORTED_MODELS[1]: 131072}
ROUTES = {
    ("POST", "/api/inference/v1/chat/completions"): "chat",
    ("POST", "/api/inference/v1/features/auto-edits"): "autosteer",
    ("GET", "/api/inference/v1/features/search"): "search",
    ("POST", "/api/inference/v1/features/lookup"): "lookup",
}
_NS = uuid.UUID("6f1d8a52-3c4e-4b7a-9a51-2f0c1e9b7d10")

FaultKind = Literal["status", "timeout", "malformed", "bad_shape", "drop"]


@dataclass(frozen=True)
class Fault:
    """One injected failure: an HTTP status (with optional Retry-After), a reply slower than
    the client's timeout, a 200 whose body is not JSON or has the wrong shape, or a connection
    closed without any reply. ``body`` is the text sent with a status fault."""

    kind: FaultKind
    status: int = 500
    retry_after: str | None = None
    delay_s: float = 5.0
    body: bytes = b"injected failure"


def _digest(*parts: Any) -> int:
    return int(hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12], 16)


def feature(model: str, index: int, label: str | None = None) -> dict[str, Any]:
    """The server's feature record for ``index`` of ``model`` (stable uuid and label)."""
    return {
        "id": uuid.uuid5(_NS, f"{model}:{index}").hex,
        "label": label if label is not None else f"feature {index} of {model.split('/')[-1]}",
        "index_in_sae": index,
    }


def _feature_for(model: str, text: str, salt: int) -> dict[str, Any]:
    index = _digest(model, text, salt) % SAE_SIZE[model]
    return feature(model, index, f"{text} (aspect {salt})")


class _Listener(ThreadingHTTPServer):
    # The default listen backlog (5) resets connections when a test opens dozens at once.
    request_queue_size = 256


class GoodfireServer:
    """Fake Goodfire API in a background thread; use as a context manager or start()/stop().

    ``calls[endpoint]`` counts every request received (faults and 401s included), ``served``
    only successful replies, ``served_keys`` successful replies per distinct request;
    ``requests`` keeps (endpoint, payload) pairs in arrival order, ``raw`` every request as
    it arrived and ``rejected`` the problems of each request answered 422.
    """

    def __init__(self, api_key: str = "gf-test-key-0123456789", latency_s: float = 0.0) -> None:
        self.api_key = api_key
        self.latency_s = latency_s
        self.calls: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.served_keys: Counter[str] = Counter()  # successful replies per request identity
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.raw: list[RawRequest] = []  # every routed request, as it arrived
        self.rejected: list[list[dict[str, Any]]] = []  # the detail of every 422 sent
        self.faults: dict[str, deque[Fault]] = defaultdict(deque)
        self.autosteer_answers: dict[str, list[tuple[dict[str, Any], float]]] = {}
        self.search_results: dict[str, list[dict[str, Any]]] = {}
        # replies to agentic feature-picker prompts, used before the default (valid) pick
        self.picker_replies: deque[str] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def inject(self, endpoint: str, *faults: Fault) -> None:
        """Queue faults for ``endpoint`` ("chat", "autosteer", "search", "lookup" or "*"):
        each one is used by exactly one request, in order."""
        with self._lock:
            self.faults[endpoint].extend(faults)

    def start(self) -> GoodfireServer:
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = _Listener(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> GoodfireServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- behaviour --------------------------------------------------------------------------
    def _next_fault(self, endpoint: str) -> Fault | None:
        with self._lock:
            for name in (endpoint, "*"):
                if self.faults[name]:
                    return self.faults[name].popleft()
        return None

    def autosteer(self, payload: dict[str, Any]) -> dict[str, Any]:
        spec, model = payload["specification"], _model(payload)
        if spec in self.autosteer_answers:
            pairs = self.autosteer_answers[spec]
        else:
            pairs = [
                (_feature_for(model, spec, 0), round(0.2 + (_digest(spec, "a") % 40) / 100, 2)),
                (_feature_for(model, spec, 1), round(0.1 + (_digest(spec, "b") % 30) / 100, 2)),
            ]
        return {"edits": [[f, v] for f, v in pairs]}

    def search(self, params: dict[str, list[str]]) -> dict[str, Any]:
        query, model = params["query"][0], params["model"][0]
        if model not in SUPPORTED_MODELS:
            raise _BadRequest(f"unsupported model {model!r}")
        k = int(params.get("perPage", ["10"])[0])
        preset = {q.casefold(): v for q, v in self.search_results.items()}
        if query.casefold() in preset:
            found = preset[query.casefold()][:k]
        else:
            found = [_feature_for(model, query, i) for i in range(k)]
        return {
            "features": [{**f, "relevance": round(1 - i / (k + 1), 4)} for i, f in enumerate(found)]
        }

    def lookup(self, payload: dict[str, Any]) -> dict[str, Any]:
        model = _model(payload)
        out = []
        for index in payload["indices"]:
            if not 0 <= int(index) < SAE_SIZE[model]:
                continue
            f = feature(model, int(index))
            out.append({"uuid": f["id"], "label": f["label"], "index_in_sae": f["index_in_sae"]})
        return {"features": out}

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        model = _model(payload)
        messages = payload["messages"]
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("messages must be a non-empty list")
        for m in messages:
            if m.get("role") not in ("system", "user", "assistant") or not isinstance(
                m.get("content"), str
            ):
                raise _BadRequest(f"bad message {m!r}")
        edits = _controller_edits(payload.get("controller"))
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        h = _digest(model, messages, edits, payload.get("temperature"), payload.get("seed"))
        asks = [m["content"] for m in messages if m["role"] == "user"]
        if any("Candidate features:" in a for a in asks):  # agentic picker (methods/agentic.py)
            return self._completion(model, h, self._pick(asks[0]), "stop")
        dose = sum(abs(v) for _, v in edits)
        steer = (
            "unsteered"
            if not edits
            else "steered by " + ", ".join(f"{i}:{v:+.3f}" for i, v in edits)
        )
        if "<answer>" in user:
            if dose > 1.0:  # pushed too hard: no readable answer tag, like a degraded model
                text = f"<thinking>the the the</thinking> ({steer})"
            else:
                letter = "ABCD"[h % 4]
                text = f"<thinking>Weighing options ({steer}).</thinking><answer>{letter}</answer>"
        else:
            sys_note = "" if system is None else f" [system: {system[:60]}]"
            text = f"Reply {h % 100000:05d} to {user[:40]!r}{sys_note} ({steer})."
        max_tokens = payload.get("max_completion_tokens")
        words = text.split()
        finish = "stop"
        if isinstance(max_tokens, int) and len(words) > max_tokens:
            text, finish = " ".join(words[:max_tokens]), "length"
        return self._completion(model, h, text, finish)

    def _pick(self, prompt: str) -> str:
        with self._lock:
            if self.picker_replies:
                return self.picker_replies.popleft()
        listed = [line for line in prompt.splitlines() if line[:1].isdigit() and ". " in line]
        chosen = [{"feature": 1, "strength": 0.3}]
        if len(listed) > 1:
            chosen.append({"feature": 2, "strength": -0.15})
        reasoning = "the first features match the goal"
        if "<features>" in prompt:  # asked for XML tags
            tags = "".join(
                f"<feature><number>{c['feature']}</number><strength>{c['strength']}</strength>"
                "</feature>\n"
                for c in chosen
            )
            return f"<reasoning>{reasoning}</reasoning>\n<features>\n{tags}</features>"
        return json.dumps({"reasoning": reasoning, "features": chosen})

    @staticmethod
    def _completion(model: str, h: int, text: str, finish: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{h:x}",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "system_fingerprint": "fake-goodfire",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                }
            ],
        }

    def chat_texts(self) -> Iterator[str]:
        """Every chat payload's messages, as text (to check what the client sent)."""
        for endpoint, payload in self.requests:
            if endpoint == "chat":
                yield json.dumps(payload["messages"])


class _BadRequest(Exception):
    pass


def _model(payload: dict[str, Any]) -> str:
    model = payload.get("model")
    if model not in SUPPORTED_MODELS:
        raise _BadRequest(f"unsupported model {model!r}; supported: {', '.join(SUPPORTED_MODELS)}")
    return str(model)


def _request_identity(endpoint: str, payload: dict[str, Any]) -> str:
    """What makes two requests the same (a controller's ``name`` is random per Variant)."""
    ident = dict(payload)
    if "controller" in ident:
        ident["controller"] = _controller_edits(ident["controller"])
    return f"{endpoint}:{_digest(ident):x}"


def _controller_edits(controller: Any) -> list[tuple[int, float]]:
    """(index_in_sae, value) pairs from a Controller.json() payload, validating its shape."""
    if controller is None:
        return []
    if not isinstance(controller, dict) or not isinstance(controller.get("interventions"), list):
        raise _BadRequest("controller must have an interventions list")
    out = []
    for iv in controller["interventions"]:
        if iv.get("mode") not in ("nudge", "pin", "mul"):
            raise _BadRequest(f"bad intervention mode {iv.get('mode')!r}")
        feats = iv.get("features", {}).get("features")
        if not isinstance(feats, list) or not feats:
            raise _BadRequest("intervention without features")
        for f in feats:
            if not isinstance(f.get("index_in_sae"), int) or not f.get("uuid"):
                raise _BadRequest(f"bad feature {f!r}")
            out.append((f["index_in_sae"], float(iv["value"])))
    return sorted(out)


# -- request schema (from the SDK's request code and interfaces; 422 on any violation) --------
HEX_ID = re.compile(r"[0-9a-f]{32}")
CHAT_FIELDS = {
    "messages", "stream", "max_completion_tokens", "top_p", "temperature", "stop", "seed",
    "model", "controller",
    "disable_moderation",  # sent by SDK 0.3.2-0.3.3 (always false)
}
CONTROLLER_FIELDS = {
    "interventions", "scopes", "name", "nonzero_strength_threshold", "min_nudge_entropy",
    "max_nudge_entropy",
}
SEARCH_PARAMS = {"query", "page", "perPage", "model"}
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class RawRequest:
    """One request as it arrived: headers with lower-case names, ``body`` the parsed JSON
    (``raw`` its bytes)."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    headers: dict[str, str]
    body: Any
    raw: bytes = b""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class _Checker:
    """Collects schema violations as FastAPI-style ``{"loc", "msg", "type"}`` entries."""

    def __init__(self) -> None:
        self.problems: list[dict[str, Any]] = []

    def bad(self, loc: Loc, msg: str, kind: str = "value_error") -> None:
        self.problems.append({"loc": list(loc), "msg": msg, "type": kind})

    def fields(self, obj: Any, loc: Loc, allowed: set[str], required: set[str]) -> bool:
        if not isinstance(obj, dict):
            self.bad(loc, "must be an object", "type_error")
            return False
        for k in sorted(set(obj) - allowed):
            self.bad((*loc, k), "extra fields not permitted", "extra_forbidden")
        missing = sorted(required - set(obj))
        for k in missing:
            self.bad((*loc, k), "field required", "missing")
        return not missing

    def model(self, value: Any, loc: Loc) -> str | None:
        if value not in SUPPORTED_MODELS:
            self.bad(loc, f"unsupported model {value!r}; supported: {', '.join(SUPPORTED_MODELS)}")
            return None
        return str(value)

    def feature(self, f: Any, loc: Loc, model: str | None) -> None:
        fields = {"uuid", "label", "index_in_sae", "max_activation_strength"}
        if not self.fields(f, loc, fields, fields):
            return
        if not isinstance(f["uuid"], str) or not HEX_ID.fullmatch(f["uuid"]):
            self.bad((*loc, "uuid"), f"feature uuid must be 32 hex digits, got {f['uuid']!r}")
        if not isinstance(f["label"], str):
            self.bad((*loc, "label"), "must be a string", "type_error")
        index = f["index_in_sae"]
        if not _is_int(index) or index < 0 or (model and index >= SAE_SIZE[model]):
            self.bad((*loc, "index_in_sae"), f"not an SAE index of {model}: {index!r}")
        if not _is_num(f["max_activation_strength"]):
            self.bad((*loc, "max_activation_strength"), "must be a number", "type_error")

    def controller(self, c: Any, loc: Loc, model: str | None) -> None:
        if not self.fields(c, loc, CONTROLLER_FIELDS, CONTROLLER_FIELDS):
            return
        if not isinstance(c["name"], str) or not c["name"]:
            self.bad((*loc, "name"), "must be a non-empty string")
        for k in ("nonzero_strength_threshold", "min_nudge_entropy", "max_nudge_entropy"):
            if c[k] is not None and not _is_num(c[k]):
                self.bad((*loc, k), "must be a number or null", "type_error")
        if c["scopes"] != []:
            self.bad((*loc, "scopes"), "conditional scopes are not served by this test server")
        if not isinstance(c["interventions"], list):
            self.bad((*loc, "interventions"), "must be a list", "type_error")
            return
        for i, iv in enumerate(c["interventions"]):
            here = (*loc, "interventions", i)
            keys = {"mode", "features", "value"}
            if not self.fields(iv, here, keys, keys):
                continue
            if iv["mode"] not in ("nudge", "pin", "mul"):
                self.bad((*here, "mode"), f"unknown mode {iv['mode']!r}")
            if not _is_num(iv["value"]):
                self.bad((*here, "value"), "must be a finite number", "type_error")
            group = iv["features"]
            if not self.fields(group, (*here, "features"), {"features"}, {"features"}):
                continue
            feats = group["features"]
            if not isinstance(feats, list) or not feats:
                self.bad((*here, "features", "features"), "must be a non-empty list")
                continue
            for j, f in enumerate(feats):
                self.feature(f, (*here, "features", "features", j), model)

    def chat(self, body: Any) -> None:
        if not self.fields(body, ("body",), CHAT_FIELDS, {"messages", "model"}):
            return
        model = self.model(body["model"], ("body", "model"))
        messages = body["messages"]
        if not isinstance(messages, list) or not messages:
            self.bad(("body", "messages"), "must be a non-empty list")
        else:
            for i, m in enumerate(messages):
                loc = ("body", "messages", i)
                if self.fields(m, loc, {"role", "content"}, {"role", "content"}):
                    if m["role"] not in ("system", "user", "assistant"):
                        self.bad((*loc, "role"), f"unknown role {m['role']!r}")
                    if not isinstance(m["content"], str):
                        self.bad((*loc, "content"), "must be a string", "type_error")
        if "stream" in body and not isinstance(body["stream"], bool):
            self.bad(("body", "stream"), "must be a boolean", "type_error")
        if body.get("stream"):
            self.bad(("body", "stream"), "streaming is not served by this test server")
        mct = body.get("max_completion_tokens")
        if mct is not None and (not _is_int(mct) or mct < 1):
            self.bad(("body", "max_completion_tokens"), "must be an integer >= 1 or null")
        if "top_p" in body and not (_is_num(body["top_p"]) and 0 < body["top_p"] <= 1):
            self.bad(("body", "top_p"), "must be a number in (0, 1]")
        temp = body.get("temperature", 0.6)
        if not (_is_num(temp) and 0 <= temp <= 2):
            self.bad(("body", "temperature"), "must be a number in [0, 2]")
        stop = body.get("stop")
        if not (stop is None or isinstance(stop, str) or (
            isinstance(stop, list) and all(isinstance(x, str) for x in stop)
        )):
            self.bad(("body", "stop"), "must be a string, a list of strings or null")
        if body.get("seed") is not None and not _is_int(body["seed"]):
            self.bad(("body", "seed"), "must be an integer or null", "type_error")
        if "disable_moderation" in body and not isinstance(body["disable_moderation"], bool):
            self.bad(("body", "disable_moderation"), "must be a boolean", "type_error")
        if "controller" in body:
            self.controller(body["controller"], ("body", "controller"), model)

    def autosteer(self, body: Any) -> None:
        keys = {"specification", "model"}
        if self.fields(body, ("body",), keys, keys):
            self.model(body["model"], ("body", "model"))
            spec = body["specification"]
            if not isinstance(spec, str) or not spec.strip():
                self.bad(("body", "specification"), "must be a non-empty string")

    def lookup(self, body: Any) -> None:
        keys = {"indices", "model"}
        if self.fields(body, ("body",), keys, keys):
            self.model(body["model"], ("body", "model"))
            indices = body["indices"]
            if not isinstance(indices, list) or not all(_is_int(i) and i >= 0 for i in indices):
                self.bad(("body", "indices"), "must be a list of integers >= 0")

    def search(self, query: list[tuple[str, str]]) -> None:
        names = [k for k, _ in query]
        for k in sorted(set(names) - SEARCH_PARAMS):
            self.bad(("query", k), "extra fields not permitted", "extra_forbidden")
        for k in sorted(SEARCH_PARAMS - set(names)):
            self.bad(("query", k), "field required", "missing")
        for k in sorted({k for k in names if names.count(k) > 1}):
            self.bad(("query", k), "given more than once")
        params = dict(query)
        if "model" in params:
            self.model(params["model"], ("query", "model"))
        if "query" in params and not params["query"].strip():
            self.bad(("query", "query"), "must be a non-empty string")
        for k, top in (("page", 10**6), ("perPage", 100)):
            if k in params and not (params[k].isdigit() and 1 <= int(params[k]) <= top):
                self.bad(("query", k), f"must be an integer in [1, {top}]")


def validate(endpoint: str, body: Any = None, query: list[tuple[str, str]] | None = None,
             ) -> list[dict[str, Any]]:
    """The schema violations of one request to ``endpoint`` (empty when it is valid)."""
    check = _Checker()
    if endpoint == "search":
        check.search(query or [])
    else:
        getattr(check, endpoint)(body)
    return check.problems


class _Handler(BaseHTTPRequestHandler):
    owner: GoodfireServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, verb: str) -> None:
        owner = self.owner
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        endpoint = ROUTES.get((verb, parts.path))
        if endpoint is None:
            self._send(404, b"Not found.")
            return
        query = parse_qsl(parts.query, keep_blank_values=True)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        with owner._lock:
            owner.calls[endpoint] += 1
            owner.raw.append(RawRequest(verb, parts.path, tuple(query), headers, body, raw))
        fault = owner._next_fault(endpoint)
        if fault is not None:
            self._fault(fault)
            return
        if self.headers.get("Authorization") != f"Bearer {owner.api_key}":
            self._send(401, b"Invalid API key.")
            return
        if owner.latency_s:
            time.sleep(owner.latency_s)
        if verb == "GET":
            params = parse_qs(parts.query, keep_blank_values=True)
            payload: dict[str, Any] = {k: v[0] if len(v) == 1 else v for k, v in params.items()}
        else:
            payload = body
        with owner._lock:
            owner.requests.append((endpoint, payload))
        problems = (
            validate(endpoint, query=query)
            if verb == "GET"
            else (
                validate(endpoint, body)
                if isinstance(body, dict)
                else [{"loc": ["body"], "msg": "invalid JSON object", "type": "json_invalid"}]
            )
        )
        if problems:
            with owner._lock:
                owner.rejected.append(problems)
            self._send(422, json.dumps({"detail": problems}).encode())
            return
        try:
            reply = owner.search(params) if verb == "GET" else getattr(owner, endpoint)(payload)
        except (_BadRequest, KeyError, ValueError, TypeError) as exc:
            self._send(422, json.dumps({"detail": [{"msg": str(exc)}]}).encode())
            return
        with owner._lock:
            owner.served[endpoint] += 1
            owner.served_keys[_request_identity(endpoint, payload)] += 1
        self._send(200, json.dumps(reply).encode())

    def _fault(self, fault: Fault) -> None:
        if fault.kind == "status":
            headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
            self._send(fault.status, fault.body, headers)
        elif fault.kind == "timeout":
            self.owner._stop.wait(fault.delay_s)
            self.close_connection = True
        elif fault.kind == "malformed":
            self._send(200, b'{"choices": [ this is not json')
        elif fault.kind == "bad_shape":
            self._send(200, b'{"unexpected": "shape"}')
        elif fault.kind == "drop":
            self.close_connection = (
                True  # no status line at all: the client sees a dropped connection
            )


@pytest.fixture(name="goodfire_server")
def goodfire_server_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[GoodfireServer]:
    """A started fake Goodfire API; GOODFIRE_API_KEY is set to its key, GOODFIRE_BASE_URL unset."""
    with GoodfireServer() as server:
        monkeypatch.setenv("GOODFIRE_API_KEY", server.api_key)
        monkeypatch.delenv("GOODFIRE_BASE_URL", raising=False)
        yield server
