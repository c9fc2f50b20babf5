"""``goodfire``: Goodfire's SAE-steerable Llama models through the ``goodfire`` SDK.

Generation applies ``feature_edits`` steering as an SDK ``Variant``; the extras ``autosteer``
(Auto Steer: query text -> feature edits), ``search_features`` and ``lookup_features`` serve the
``autosteer``, ``agentic`` and ``features`` methods. The SDK builds every request and parses
every reply; only its HTTP layer is replaced, because the SDK's own layer retries 429s with a
blocking ``time.sleep`` (freezing the event loop) and drops the ``Retry-After`` header. Ours
makes exactly one attempt per call with a bounded timeout and maps failures for the collector:
429/5xx/timeouts/dropped connections/malformed replies -> ``TransientError`` (retried by the
collection layer's policy), 401/403/402 -> ``PrerequisiteError`` (not retried).

The API key is read from ``GOODFIRE_API_KEY`` only, when the first call is made; it is never
an option, never in ``identity()`` and is redacted from error messages. The base URL comes from
the ``base_url`` option, else ``GOODFIRE_BASE_URL``, else Goodfire's production URL.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from steerstats.backends._registry import backend
from steerstats.backends.base import Backend, GenerationRequest, GenerationResult, TransientError
from steerstats.backends.feature_edits import FeatureEdit, edits_from_steering
from steerstats.errors import ConfigError, PrerequisiteError, pip_dependency_error

ENV_API_KEY = "GOODFIRE_API_KEY"
ENV_BASE_URL = "GOODFIRE_BASE_URL"
PRODUCTION_BASE_URL = "https://api.goodfire.ai"
SDK_STOP = ["<|eot_id|>", "<|begin_of_text|>"]  # the SDK's own default stop sequences

# Options and their defaults. Those in _ANSWER_OPTIONS can change replies and go into identity().
DEFAULTS: dict[str, Any] = {
    "base_url": None,
    "top_p": 0.9,
    "stop": SDK_STOP,
    "system_prompt": "",
    "timeout_s": 120.0,
    "connect_timeout_s": 10.0,
    "max_concurrency": 8,
    "unreachable_after_s": 60.0,
}
_ANSWER_OPTIONS = ("base_url", "top_p", "stop", "system_prompt")


class GoodfireRequestError(RuntimeError):
    """The API rejected one request (400, 404, 422, ...): not retried, recorded as a failure."""


class GoodfireUnreachable(TransientError):
    """No connection could be made to the base URL (refused, DNS failure): retried by policy."""


def _redact_url(url: str) -> str:
    """The URL without user:password@ (never put credentials into identities or logs)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


class _Transport:
    """Stands in for the SDK's ``AsyncHTTPWrapper`` (``get``/``post``): one attempt per call,
    our timeout, errors mapped for the collector. One pooled httpx client per event loop.

    A failed connection is retryable, but once every connection attempt has failed for
    ``unreachable_after_s`` (longer than the collector's retry policy takes to give up on one
    call), the service is declared unreachable: every further call raises one
    PrerequisiteError naming the base URL at once, instead of each task retrying on its own.
    """

    max_retries = 0

    def __init__(
        self,
        base_url: str,
        timeout_s: float,
        connect_timeout_s: float,
        unreachable_after_s: float,
    ) -> None:
        self.base_url = base_url
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        self.unreachable_after_s = unreachable_after_s
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down_since: float | None = None  # first failed connection since the last success
        self._down_reason = ""
        self._down_attempts = 0
        self._refused: PrerequisiteError | None = None  # a refused key fails every later call

    def _unreachable(self) -> PrerequisiteError | None:
        if self._down_since is None:
            return None
        down_for = time.monotonic() - self._down_since
        if down_for < self.unreachable_after_s:
            return None
        return PrerequisiteError(
            f"cannot reach the Goodfire API at {self.base_url}: {self._down_attempts} "
            f"connection attempt(s) over {down_for:.1f}s all failed ({self._down_reason}). Check "
            f"that the service is up and that base_url / {ENV_BASE_URL} points at it."
        )

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop or self._client.is_closed:
            self._client = httpx.AsyncClient(
                timeout=self.timeout,
                # the collector bounds calls in flight; the pool must not add its own queue
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
            )
            self._loop = loop
        return self._client

    def _connect_failed(self, exc: httpx.HTTPError) -> Exception:
        if self._down_since is None:
            self._down_since, self._down_attempts = time.monotonic(), 0
        self._down_attempts += 1
        self._down_reason = _reason(exc)
        return self._unreachable() or GoodfireUnreachable(
            f"cannot connect to the Goodfire API at {self.base_url} ({self._down_reason}); check "
            f"that the service is up and that base_url / {ENV_BASE_URL} points at it"
        )

    async def aclose(self) -> None:
        if self._client is not None and not self._client.is_closed:
            if self._loop is asyncio.get_running_loop():
                await self._client.aclose()
        self._client = None

    async def get(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        _attempt_num: int = 0,
        timeout: float | None = None,
    ) -> httpx.Response:
        return await self._send("GET", url, headers, params=params)

    async def post(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        _attempt_num: int = 0,
        timeout: float | None = None,
    ) -> httpx.Response:
        return await self._send("POST", url, headers, json=json)

    async def _send(
        self, method: str, url: str, headers: dict[str, Any] | None, **kwargs: Any
    ) -> httpx.Response:
        path = urlsplit(url).path
        where = f"Goodfire API at {self.base_url} ({method} {path})"
        if self._refused is not None:
            raise self._refused
        down = self._unreachable()
        if down is not None:
            raise down
        try:
            response = await self._http().request(method, url, headers=headers, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise self._connect_failed(exc) from None
        except httpx.TimeoutException:
            self._down_since = None
            raise TransientError(f"{where} timed out after {self.timeout.read}s") from None
        except httpx.TransportError as exc:  # dropped connection, protocol error
            self._down_since = None
            raise TransientError(f"{where}: connection dropped ({_reason(exc)})") from None
        self._down_since = None
        status = response.status_code
        if status < 400:
            try:
                response.json()
            except ValueError:
                raise TransientError(f"{where}: malformed reply (not JSON)") from None
            return response
        body = _redact(response.text[:300], headers)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        if status in (401, 403):
            self._refused = PrerequisiteError(
                f"the {where} refused the API key (HTTP {status}: {body or 'unauthorized'}). "
                f"Set a valid key in the environment variable {ENV_API_KEY}."
            )
            raise self._refused
        if status == 402:
            self._refused = PrerequisiteError(
                f"the {where} reports insufficient credits (HTTP 402: {body})."
            )
            raise self._refused
        if status in (408, 409, 425, 429) or status >= 500:
            raise TransientError(f"{where}: HTTP {status} ({body})", retry_after=retry_after)
        raise GoodfireRequestError(f"{where} rejected the request: HTTP {status} ({body})")


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _redact(text: str, headers: Mapping[str, Any] | None) -> str:
    """``text`` with the bearer token from ``headers`` blanked out, should a server echo it."""
    auth = str((headers or {}).get("Authorization", ""))
    token = auth.removeprefix("Bearer ").strip()
    return text.replace(token, "***") if token else text


@backend("goodfire")
class GoodfireBackend(Backend):
    """Goodfire-hosted Llama models (ids as the SDK names them, e.g.
    ``meta-llama/Meta-Llama-3.1-8B-Instruct``) with SAE feature-edit steering.

    Options: ``base_url``; ``top_p`` (0.9) and ``stop`` (the SDK's defaults); ``system_prompt``
    ("", sent only when a request has no system message; the SDK's own default is not used);
    ``timeout_s`` (120) and ``connect_timeout_s`` (10) per attempt; ``max_concurrency`` (8);
    ``unreachable_after_s`` (60): after this long with every connection refused, calls fail at
    once with one message naming the base URL (the default outlasts the collector's default
    retry policy, so that policy runs first).
    """

    def __init__(self, model: str, options: Mapping[str, Any] | None = None) -> None:
        options = dict(options or {})
        secret = sorted(
            k for k in options if k.lower() in ("api_key", "key", "token", "authorization")
        )
        if secret:
            raise ConfigError(
                f"goodfire backend option {secret[0]!r}: the API key never goes in the experiment "
                f"file; set the environment variable {ENV_API_KEY} instead"
            )
        unknown = sorted(set(options) - set(DEFAULTS))
        if unknown:
            raise ConfigError(
                f"goodfire backend got unknown option(s) {', '.join(map(repr, unknown))}; "
                f"accepted: {', '.join(DEFAULTS)}"
            )
        super().__init__(model, options)
        try:
            import goodfire  # noqa: F401  (checked now so a missing SDK fails before any call)
        except ImportError:
            raise pip_dependency_error(
                "the goodfire backend", ["goodfire"], extra="goodfire"
            ) from None
        settings = {**DEFAULTS, **options}
        base = settings["base_url"] or os.environ.get(ENV_BASE_URL) or PRODUCTION_BASE_URL
        self.base_url = str(base).rstrip("/")
        self.top_p = float(settings["top_p"])
        self.stop = settings["stop"]
        self.system_prompt = str(settings["system_prompt"])
        self._concurrency = int(settings["max_concurrency"])
        self._transport = _Transport(
            self.base_url,
            float(settings["timeout_s"]),
            float(settings["connect_timeout_s"]),
            unreachable_after_s=float(settings["unreachable_after_s"]),
        )
        self._sdk: Any = None

    # -- identity and plumbing --------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """Backend, model and the options that can change replies; never the key or timeouts."""
        opts = {
            "base_url": _redact_url(self.base_url),
            "top_p": self.top_p,
            "stop": self.stop,
            "system_prompt": self.system_prompt,
        }
        return {
            "backend": self.name,
            "model": self.model,
            "options": {k: opts[k] for k in _ANSWER_OPTIONS},
        }

    def max_concurrency(self) -> int:
        return self._concurrency

    def _client(self) -> Any:
        if self._sdk is None:
            key = os.environ.get(ENV_API_KEY, "").strip()
            if not key:
                raise PrerequisiteError(
                    f"the goodfire backend needs an API key: set the environment variable "
                    f"{ENV_API_KEY} (keys are read only from the environment)"
                )
            import goodfire

            client = goodfire.AsyncClient(api_key=key, base_url=self.base_url)
            apis = (client.chat, client.chat.completions, client.features)
            if not all(hasattr(api, "_http") for api in apis):
                raise PrerequisiteError(
                    f"goodfire SDK {getattr(goodfire, '__version__', '?')} is not supported; "
                    "install a 0.3 release: pip install 'goodfire>=0.3,<0.4'"
                )
            for api in apis:
                api._http = self._transport  # type: ignore[assignment]  # one attempt per call
            self._sdk = client
        return self._sdk

    @contextmanager
    def _replies(self, what: str) -> Iterator[None]:
        """Map SDK parsing failures of a 2xx reply to a retryable malformed-reply error."""
        from goodfire.api.exceptions import GoodfireBaseException, ServerErrorException

        try:
            yield
        except (TransientError, PrerequisiteError, GoodfireRequestError):
            raise
        except (
            ServerErrorException,
            ValueError,
            KeyError,
            TypeError,
            IndexError,
            AttributeError,
        ) as exc:
            raise TransientError(
                f"malformed {what} reply from the Goodfire API at {self.base_url} "
                f"({type(exc).__name__}: {str(exc)[:200]})"
            ) from None
        except GoodfireBaseException as exc:
            raise GoodfireRequestError(f"Goodfire {what} failed: {exc}") from None

    async def aclose(self) -> None:
        await self._transport.aclose()

    # -- generation -------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> GenerationResult:
        import goodfire

        model: Any = self.model
        edits: list[FeatureEdit] = []
        if request.steering is not None:
            edits = edits_from_steering(request.steering)
            variant = goodfire.Variant(self.model)  # type: ignore[arg-type]
            for e in edits:
                # ids stay strings, as the SDK's own Auto Steer path leaves them
                feat = goodfire.Feature(uuid=e.id, label=e.label, index_in_sae=e.index)  # type: ignore[arg-type]
                variant.set(feat, e.value)
            model = variant
        messages = [dict(m) for m in request.messages]
        has_system = any(m.get("role") == "system" for m in messages)
        client = self._client()
        with self._replies("chat completion"):
            reply = await client.chat.completions.create(
                messages,
                model=model,
                stream=False,
                max_completion_tokens=request.max_tokens,
                top_p=self.top_p,
                temperature=request.temperature,
                stop=self.stop,
                seed=request.seed,
                system_prompt="" if has_system else self.system_prompt,
            )
            choice = reply.choices[0]
            text = choice.message["content"]
            if not isinstance(text, str):
                raise TypeError("message content is not text")
        return GenerationResult(
            text=text,
            finish_reason=choice.finish_reason,
            extra={"served_model": reply.model, "n_feature_edits": len(edits)},
        )

    # -- extras used by methods ---------------------------------------------------------------
    async def autosteer(self, query_text: str) -> list[dict[str, Any]]:
        """Auto Steer: the feature edits Goodfire proposes for ``query_text`` on this model."""
        client = self._client()
        with self._replies("Auto Steer"):
            result = await client.features.AutoSteer(specification=query_text, model=self.model)
            return [
                FeatureEdit(
                    id=str(f.uuid), index=int(f.index_in_sae), label=str(f.label), value=float(v)
                ).model_dump()
                for f, v in result.as_dict().items()
            ]

    async def search_features(self, query_text: str, k: int = 10) -> list[dict[str, Any]]:
        """Feature search: up to ``k`` features for ``query_text``, most relevant first."""
        client = self._client()
        with self._replies("feature search"):
            group = await client.features.search(query_text, model=self.model, top_k=int(k))
            return [
                {"id": str(f.uuid), "index": int(f.index_in_sae), "label": str(f.label)}
                for f in group
            ]

    async def lookup_features(self, indices: list[int]) -> list[dict[str, Any]]:
        """Features by SAE index (those the model does not have are absent from the result)."""
        client = self._client()
        with self._replies("feature lookup"):
            found = await client.features.lookup([int(i) for i in indices], model=self.model)
            return [
                {"id": str(f.uuid), "index": int(idx), "label": str(f.label)}
                for idx, f in sorted(found.items())
            ]


__all__ = ["GoodfireBackend", "GoodfireRequestError", "GoodfireUnreachable", "parse_retry_after"]
