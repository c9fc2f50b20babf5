"""``openai``: any OpenAI-compatible chat-completions server (OpenAI, vLLM, SGLang, llama.cpp).

Uses the openai SDK's ``AsyncOpenAI`` with its own retries off (``max_retries=0``): the
collector retries, so budget and call counts see every attempt. Rate limits, 5xx, timeouts,
dropped connections and malformed replies become :class:`TransientError` carrying the
server's ``Retry-After``. The API key comes only from ``OPENAI_API_KEY``; a server on this
machine (127.0.0.1 / localhost) may run without one.

Options (experiment ``options = {...}``): ``base_url`` (else ``OPENAI_BASE_URL``, else OpenAI),
``timeout_s`` (per request, default 120), ``max_concurrency`` (default 16), ``extra_body``
(extra request fields, e.g. ``{top_p = 0.9}``; part of the cache key),
``max_tokens_field`` ("max_tokens" or "max_completion_tokens" for models that need it).
``base_urls = [...]`` instead of ``base_url``: replicas of one model, calls spread over them with
``max_concurrency`` in flight on each, failing over on errors (see ``replicas``).
"""

from __future__ import annotations

import email.utils
import json
import os
import time
from typing import Any
from urllib.parse import urlparse

from steerstats.backends._registry import backend
from steerstats.backends.base import Backend, GenerationRequest, GenerationResult, TransientError
from steerstats.errors import ConfigError, PrerequisiteError
from steerstats.redact import redact_url, secret_name

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}
_OPTIONS = {"base_url", "base_urls", "timeout_s", "max_concurrency", "extra_body",
            "max_tokens_field"}
# A placeholder sent to local servers that need no key (vLLM, llama.cpp without --api-key).
_NO_KEY = "no-key-required"


def _is_local(url: str) -> bool:
    return (urlparse(url).hostname or "") in _LOCAL_HOSTS


def _api_key(base_url: str) -> str:
    """``OPENAI_API_KEY``; a placeholder for a server on this machine; else PrerequisiteError."""
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        return key
    if not _is_local(base_url):
        raise PrerequisiteError(
            f"the openai backend needs an API key for {redact_url(base_url)}: set the "
            "OPENAI_API_KEY "
            "environment variable (keys are never read from the experiment file)"
        )
    return _NO_KEY


def _make_client(base_url: str, timeout_s: float) -> Any:
    """The SDK's async client, its own retries off, on the SDK's aiohttp transport (its
    ``aiohttp`` extra: about half the CPU per call of the default httpx2 transport)."""
    from openai import AsyncOpenAI, DefaultAioHttpClient

    return AsyncOpenAI(api_key=_api_key(base_url), base_url=base_url, max_retries=0,
                       timeout=timeout_s, http_client=DefaultAioHttpClient(timeout=timeout_s))


async def _post_chat(client: Any, body: dict[str, Any], *, base_url: str, model: str,
                    timeout_s: float) -> Any:
    """POST ``body`` to ``/chat/completions``; the reply's JSON, or the fault as a steerstats
    error (TransientError for what is worth retrying)."""
    import httpx2
    import openai

    try:
        # The SDK's documented low-level call (auth, base URL, timeouts, status errors)
        # with the reply parsed here: the typed create() costs ~1 ms more CPU per call.
        resp = await client.post("/chat/completions", body=body, cast_to=httpx2.Response)
        return json.loads(resp.content)
    except openai.RateLimitError as exc:
        raise TransientError(f"rate limited (429): {exc.message}",
                             parse_retry_after(exc.response.headers)) from exc
    except openai.APITimeoutError as exc:
        root: BaseException = exc
        while root.__cause__ is not None:
            root = root.__cause__
        if root is exc or isinstance(root, TimeoutError):
            raise TransientError(f"no reply within {timeout_s:g}s (options.timeout_s)",
                                 timeout=True) from exc
        # aiohttp's transport reports a dropped connection as a timeout
        raise TransientError(f"connection error: {type(root).__name__}: {root}") from exc
    except openai.APIConnectionError as exc:
        raise TransientError(f"connection error: {exc.__cause__ or exc}") from exc
    except openai.AuthenticationError as exc:  # base_url here is the redacted one

        raise PrerequisiteError(
            f"{base_url} rejected the API key (401); check OPENAI_API_KEY"
        ) from exc
    except openai.PermissionDeniedError as exc:
        raise PrerequisiteError(
            f"{base_url} refused access to {model!r} (403): {exc.message}"
        ) from exc
    except openai.NotFoundError as exc:
        raise ConfigError(
            f"{base_url} does not serve model {model!r} (404): {exc.message}"
        ) from exc
    except openai.APIStatusError as exc:
        status = exc.status_code
        if status in (408, 409) or status >= 500:
            raise TransientError(f"server error {status}: {exc.message}",
                                 parse_retry_after(exc.response.headers)) from exc
        raise
    except (openai.APIResponseValidationError, ValueError) as exc:  # JSONDecodeError too
        raise TransientError(f"malformed reply: {exc}") from exc
    except httpx2.TransportError as exc:  # a connection dropped while reading the body
        raise TransientError(f"connection error: {exc}") from exc


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


@backend("openai")
class OpenAIBackend(Backend):
    """Chat completions from an OpenAI-compatible server (no activation steering)."""

    def __new__(cls, model: str, options: dict[str, Any] | None = None) -> OpenAIBackend:
        # ``base_urls``: the same backend over a pool of replicas (see ``replicas``).
        if cls is OpenAIBackend and options and "base_urls" in options:
            from steerstats.backends.replicas import ReplicatedOpenAIBackend

            cls = ReplicatedOpenAIBackend
        return super().__new__(cls)

    def __init__(self, model: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(model, options)
        unknown = sorted(set(self.options) - _OPTIONS)
        if unknown:
            raise ConfigError(
                f"openai backend: unknown option(s) {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(_OPTIONS))}"
            )
        self.base_url = str(
            self.options.get("base_url") or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        ).rstrip("/")
        # What is stored and shown: credentials in the URL (user info, a key in the path or
        # query) masked. The client alone uses the real URL.
        self.public_url = redact_url(self.base_url)
        self.timeout_s = float(self.options.get("timeout_s", 120.0))
        self.extra_body = dict(self.options.get("extra_body") or {})
        for name in self.extra_body:
            if secret_name(str(name)):
                raise ConfigError(
                    f"openai backend: options.extra_body.{name} looks like a credential; "
                    "credentials come only from the environment (OPENAI_API_KEY), never from "
                    "the experiment file")
        self.max_tokens_field = str(self.options.get("max_tokens_field", "max_tokens"))
        if self.max_tokens_field not in ("max_tokens", "max_completion_tokens"):
            raise ConfigError(
                "openai backend: max_tokens_field must be 'max_tokens' or 'max_completion_tokens'"
            )
        self._client: Any = None

    def identity(self) -> dict[str, Any]:
        """Server, model and request-shaping options; not timeouts, limits or credentials."""
        return {
            "backend": self.name,
            "model": self.model,
            "base_url": self.public_url,
            "extra_body": self.extra_body,
        }

    def max_concurrency(self) -> int:
        return int(self.options.get("max_concurrency", 16))

    def _get_client(self) -> Any:
        if self._client is None:
            self._client = _make_client(self.base_url, self.timeout_s)
        return self._client

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        if request.steering is not None:
            raise ConfigError(
                f"the openai backend cannot apply {request.steering.kind!r} steering; use a "
                "method that steers by prompt (control, prompt) or a backend that steers "
                "(local, goodfire)"
            )
        body: dict[str, Any] = {
            **self.extra_body,
            "model": self.model,
            "messages": [dict(m) for m in request.messages],
            "temperature": request.temperature,
            self.max_tokens_field: request.max_tokens,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        data = await _post_chat(self._get_client(), body, base_url=self.public_url,
                               model=self.model, timeout_s=self.timeout_s)
        return _result(data)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _result(data: Any) -> GenerationResult:
    """The first choice's text, finish reason and token usage; malformed replies are transient."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
    except (TypeError, KeyError, IndexError):
        raise TransientError(
            f"malformed reply: no choices/message in {str(data)[:200]!r}") from None
    text = message.get("content") if isinstance(message, dict) else None
    usage = data.get("usage") or {}
    extra = {k: data[k] for k in ("model", "system_fingerprint") if isinstance(data.get(k), str)}
    return GenerationResult(
        text=text if isinstance(text, str) else "",
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
        completion_tokens=_int_or_none(usage.get("completion_tokens")),
        extra=extra,
    )


def _int_or_none(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None
