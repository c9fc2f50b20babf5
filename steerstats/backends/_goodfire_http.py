"""The goodfire backend's HTTP layer: stands in for the SDK's ``AsyncHTTPWrapper``.

The SDK builds every request and parses every reply; only this layer is replaced, because the
SDK's own retries 429s with a blocking ``time.sleep`` (freezing the event loop) and drops the
``Retry-After`` header. Ours makes exactly one attempt per call and maps failures for the
collector: 429/5xx/timeouts/dropped connections -> ``TransientError`` (retried by the collection
layer's policy), 401/403/402 -> ``PrerequisiteError`` (not retried), other 4xx ->
``GoodfireRequestError`` (a recorded failure).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from steerstats.backends.base import TransientError
from steerstats.errors import PrerequisiteError

ENV_API_KEY = "GOODFIRE_API_KEY"
ENV_BASE_URL = "GOODFIRE_BASE_URL"

# Set to True by the transport when a 2xx reply came back in the current task: an error raised
# by the SDK after that is a reply it could not parse, one raised before is the SDK's own fault.
REPLY_RECEIVED: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "goodfire_reply_received", default=False
)


class GoodfireRequestError(RuntimeError):
    """The API rejected one request (400, 404, 422, ...): not retried, recorded as a failure."""


class GoodfireUnreachable(TransientError):
    """No connection could be made to the base URL (refused, DNS failure): retried by policy."""


def redact_url(url: str) -> str:
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


class Transport:
    """Stands in for the SDK's ``AsyncHTTPWrapper`` (``get``/``post``, same signatures): one
    attempt per call, errors mapped for the collector. One pooled httpx client per event loop.

    ``timeout_s`` is the read timeout of every call; None uses the one the SDK passes with each
    call (chat 320 s, Auto Steer 60 s) or, when it passes none, ``sdk_default_timeout_s`` (the
    wrapper's own default, 10 s in 0.3.x). Connecting is always bounded by ``connect_timeout_s``.

    A failed connection is retryable, but once every connection attempt has failed for
    ``unreachable_after_s`` (longer than the collector's retry policy takes to give up on one
    call), the service is declared unreachable: every further call raises one
    PrerequisiteError naming the base URL at once, instead of each task retrying on its own.
    """

    max_retries = 0

    def __init__(
        self,
        base_url: str,
        timeout_s: float | None,
        connect_timeout_s: float,
        unreachable_after_s: float,
        sdk_default_timeout_s: float = 10.0,
    ) -> None:
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.sdk_default_timeout_s = sdk_default_timeout_s
        self.unreachable_after_s = unreachable_after_s
        self.last_timeout_s: float | None = None  # the read timeout of the latest call
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down_since: float | None = None  # first failed connection since the last success
        self._down_reason = ""
        self._down_attempts = 0
        self._refused: PrerequisiteError | None = None  # a refused key fails every later call

    def read_timeout(self, sdk_timeout: float | None) -> float:
        """The read timeout of one call, given what the SDK passed with it."""
        if self.timeout_s is not None:
            return self.timeout_s
        return float(sdk_timeout) if sdk_timeout is not None else self.sdk_default_timeout_s

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
        return await self._send("GET", url, headers, timeout, params=params)

    async def post(
        self,
        url: str,
        headers: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        _attempt_num: int = 0,
        timeout: float | None = None,
    ) -> httpx.Response:
        return await self._send("POST", url, headers, timeout, json=json)

    async def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, Any] | None,
        sdk_timeout: float | None,
        **kwargs: Any,
    ) -> httpx.Response:
        path = urlsplit(url).path
        where = f"Goodfire API at {self.base_url} ({method} {path})"
        if self._refused is not None:
            raise self._refused
        down = self._unreachable()
        if down is not None:
            raise down
        read = self.last_timeout_s = self.read_timeout(sdk_timeout)
        timeout = httpx.Timeout(read, connect=self.connect_timeout_s)
        try:
            response = await self._http().request(
                method, url, headers=headers, timeout=timeout, **kwargs
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise self._connect_failed(exc) from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            raise PrerequisiteError(
                f"the Goodfire base URL {redact_url(self.base_url)!r} is not usable ({exc}); "
                f"fix base_url / {ENV_BASE_URL}"
            ) from None
        except httpx.TimeoutException:
            self._down_since = None
            raise TransientError(f"{where} timed out after {read:g}s") from None
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
            REPLY_RECEIVED.set(True)
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
