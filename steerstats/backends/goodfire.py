"""``goodfire``: Goodfire's SAE-steerable Llama models through the ``goodfire`` SDK.

Generation applies ``feature_edits`` steering as an SDK ``Variant``; the extras ``autosteer``
(Auto Steer: query text -> feature edits), ``search_features`` and ``lookup_features`` serve the
``autosteer``, ``agentic`` and ``features`` methods. The SDK builds every request and parses
every reply; only its HTTP layer is replaced (``_goodfire_http``: one attempt per call, failures
mapped for the collector). A reply the SDK cannot parse is a retryable malformed reply; any other
error from the SDK (its calls or objects are not what this backend was written against) is one
"SDK incompatible" PrerequisiteError, raised once and never retried. The SDK's release and HTTP
wrapper signature are checked when the backend is created.

The API key is read from ``GOODFIRE_API_KEY`` only, when the first call is made; it is never
an option, never in ``identity()`` and is redacted from error messages. The base URL comes from
the ``base_url`` option, else ``GOODFIRE_BASE_URL``, else Goodfire's production URL.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar
from uuid import UUID

from pydantic import ValidationError

from steerstats.backends._goodfire_http import (
    ENV_API_KEY,
    ENV_BASE_URL,
    REPLY_RECEIVED,
    GoodfireRequestError,
    GoodfireUnreachable,
    Transport,
    parse_retry_after,
    redact_url,
)
from steerstats.backends._registry import backend
from steerstats.backends.base import Backend, GenerationRequest, GenerationResult, TransientError
from steerstats.backends.feature_edits import FeatureEdit, edits_from_steering
from steerstats.errors import ConfigError, PrerequisiteError, pip_dependency_error

PRODUCTION_BASE_URL = "https://api.goodfire.ai"
SDK_STOP = ["<|eot_id|>", "<|begin_of_text|>"]  # the SDK's own default stop sequences
SDK_REQUIREMENT = "goodfire>=0.3.2,<0.4"  # as the 'goodfire' extra in pyproject.toml
SDK_RANGE = ((0, 3, 2), (0, 4, 0))  # [lowest supported, first unsupported)
FEATURE_ID_FORMATS = ("sdk", "hex", "dashed")
T = TypeVar("T")

# Options and their defaults. Those in _ANSWER_OPTIONS can change replies and go into identity().
DEFAULTS: dict[str, Any] = {
    "base_url": None,
    "top_p": 0.9,
    "stop": SDK_STOP,
    # sent only when a request has no system message of its own
    "system_prompt": "",
    # true: the SDK's DEFAULT_SYSTEM_PROMPT is put first in every request, as the SDK's async
    # create() does when it is not told otherwise (every request of the seed study had it)
    "sdk_system_prompt": False,
    # how feature uuids go on the wire: "sdk" (as the SDK sends them: 32 hex digits for a
    # feature found by search, which it parses into a UUID; as the API sent it for Auto Steer
    # and lookup results), "hex" (always 32 hex digits) or "dashed" (always 8-4-4-4-12)
    "feature_ids": "sdk",
    # read timeout per call in seconds, or "sdk": the SDK's own per call (chat 320 s, Auto
    # Steer 60 s, search and lookup 10 s in 0.3.x)
    "timeout_s": 120.0,
    "connect_timeout_s": 10.0,
    "max_concurrency": 8,
    "unreachable_after_s": 60.0,
}
_ANSWER_OPTIONS = (
    "base_url", "top_p", "stop", "system_prompt", "sdk_system_prompt", "feature_ids"
)

# What the backend calls in the SDK, by the parameter names it passes: checked at start-up.
_HTTP_SIGNATURES = {
    "get": ["self", "url", "headers", "params", "_attempt_num", "timeout"],
    "post": ["self", "url", "headers", "json", "_attempt_num", "timeout"],
}
_CALLS = {
    ("chat.completions", "create"): {
        "messages", "model", "stream", "max_completion_tokens", "top_p", "temperature", "stop",
        "seed", "system_prompt",
    },
    ("features", "AutoSteer"): {"specification", "model"},
    ("features", "search"): {"query", "model", "top_k"},
    ("features", "lookup"): {"indices", "model"},
}


class _Malformed(Exception):
    """A reply the SDK accepted carries values this backend cannot use (retryable)."""


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def check_sdk(goodfire: Any) -> None:
    """Refuse an SDK release this backend was not written against, before any call is made:
    its version must be in ``SDK_REQUIREMENT`` and its HTTP wrapper, chat and feature calls
    must take the arguments the backend passes. Raises one PrerequisiteError naming the fix."""
    version = str(getattr(goodfire, "__version__", "?"))
    fix = f"install a supported release: pip install '{SDK_REQUIREMENT}'"
    found = _version_tuple(version)
    if not found or not SDK_RANGE[0] <= found < SDK_RANGE[1]:
        raise PrerequisiteError(f"goodfire SDK {version} is not supported; {fix}")
    problems = []
    try:
        from goodfire.api.utils import AsyncHTTPWrapper

        for name, expected in _HTTP_SIGNATURES.items():
            got = list(inspect.signature(getattr(AsyncHTTPWrapper, name)).parameters)
            if got != expected:
                problems.append(f"AsyncHTTPWrapper.{name}({', '.join(got)})")
        client = goodfire.AsyncClient(api_key="signature-check", base_url=PRODUCTION_BASE_URL)
        for (api, call), needed in _CALLS.items():
            obj = client
            for part in api.split("."):
                obj = getattr(obj, part)
            if not hasattr(obj, "_http"):
                problems.append(f"{api} has no HTTP wrapper to replace")
            missing = needed - set(inspect.signature(getattr(obj, call)).parameters)
            if missing:
                problems.append(f"{api}.{call} lacks {', '.join(sorted(missing))}")
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        problems.append(f"{type(exc).__name__}: {exc}")
    if problems:
        raise PrerequisiteError(
            f"goodfire SDK {version} is incompatible with the goodfire backend "
            f"({'; '.join(problems)}); {fix}"
        )


def sdk_feature_id(uuid: Any) -> str:
    """A feature's id as the SDK's ``Feature.json()`` puts it on the wire: a UUID as 32 hex
    digits, anything else (the API's own string, from Auto Steer or lookup) unchanged."""
    return uuid.hex if isinstance(uuid, UUID) else str(uuid)


@backend("goodfire")
class GoodfireBackend(Backend):
    """Goodfire-hosted Llama models (ids as the SDK names them, e.g.
    ``meta-llama/Meta-Llama-3.1-8B-Instruct``) with SAE feature-edit steering.

    Options: ``base_url``; ``top_p`` (0.9) and ``stop`` (the SDK's defaults); ``system_prompt``
    ("", sent only when a request has no system message); ``sdk_system_prompt`` (false; true
    puts the SDK's default system prompt first in every request, as its async create() does);
    ``feature_ids`` ("sdk": as the SDK sends them; "hex"; "dashed"); ``timeout_s`` (120, or
    "sdk" for the SDK's per-call timeouts) and ``connect_timeout_s`` (10) per attempt;
    ``max_concurrency`` (8); ``unreachable_after_s`` (60): after this long with every
    connection refused, calls fail at once with one message naming the base URL (the default
    outlasts the collector's default retry policy, so that policy runs first).
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
            import goodfire
        except ImportError:
            raise pip_dependency_error(
                "the goodfire backend", ["goodfire"], extra="goodfire"
            ) from None
        check_sdk(goodfire)
        from goodfire.api.chat.client import DEFAULT_SYSTEM_PROMPT
        from goodfire.api.utils import AsyncHTTPWrapper

        self.sdk_version = str(goodfire.__version__)
        settings = {**DEFAULTS, **options}
        base = settings["base_url"] or os.environ.get(ENV_BASE_URL) or PRODUCTION_BASE_URL
        self.base_url = str(base).rstrip("/")
        self.top_p = float(settings["top_p"])
        self.stop = settings["stop"]
        self.system_prompt = str(settings["system_prompt"])
        if not isinstance(settings["sdk_system_prompt"], bool):
            raise ConfigError("goodfire backend option 'sdk_system_prompt' must be true or false")
        self.sdk_system_prompt = DEFAULT_SYSTEM_PROMPT if settings["sdk_system_prompt"] else ""
        self.feature_ids = settings["feature_ids"]
        if self.feature_ids not in FEATURE_ID_FORMATS:
            raise ConfigError(
                f"goodfire backend option 'feature_ids' must be one of "
                f"{', '.join(FEATURE_ID_FORMATS)}, got {self.feature_ids!r}"
            )
        timeout = settings["timeout_s"]
        if timeout != "sdk" and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                 or timeout <= 0):
            raise ConfigError(
                f"goodfire backend option 'timeout_s' must be a number of seconds > 0 or "
                f"\"sdk\", got {timeout!r}"
            )
        sdk_default = inspect.signature(AsyncHTTPWrapper.post).parameters["timeout"].default
        self._concurrency = int(settings["max_concurrency"])
        self._transport = Transport(
            self.base_url,
            None if timeout == "sdk" else float(timeout),
            float(settings["connect_timeout_s"]),
            unreachable_after_s=float(settings["unreachable_after_s"]),
            sdk_default_timeout_s=float(sdk_default),
        )
        self._sdk: Any = None
        self._incompatible: PrerequisiteError | None = None

    # -- identity and plumbing --------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """Backend, model and the options that can change replies; never the key or timeouts."""
        opts = {
            "base_url": redact_url(self.base_url),
            "top_p": self.top_p,
            "stop": self.stop,
            "system_prompt": self.system_prompt,
            "sdk_system_prompt": self.sdk_system_prompt,  # its text: "" when not sent
            "feature_ids": self.feature_ids,
        }
        return {
            "backend": self.name,
            "model": self.model,
            "options": {k: opts[k] for k in _ANSWER_OPTIONS},
        }

    def max_concurrency(self) -> int:
        return self._concurrency

    def _client(self) -> Any:
        if self._incompatible is not None:
            raise self._incompatible
        if self._sdk is None:
            key = os.environ.get(ENV_API_KEY, "").strip()
            if not key:
                raise PrerequisiteError(
                    f"the goodfire backend needs an API key: set the environment variable "
                    f"{ENV_API_KEY} (keys are read only from the environment)"
                )
            import goodfire

            client = goodfire.AsyncClient(api_key=key, base_url=self.base_url)
            for api in (client.chat, client.chat.completions, client.features):
                api._http = self._transport  # type: ignore[assignment]  # one attempt per call
            self._sdk = client
        return self._sdk

    def _incompatible_sdk(self, what: str, exc: BaseException) -> PrerequisiteError:
        """Latch one "SDK incompatible" error: every later call raises it without a request."""
        self._incompatible = PrerequisiteError(
            f"goodfire SDK {self.sdk_version} is incompatible with the goodfire backend: the "
            f"{what} call failed inside the SDK ({type(exc).__name__}: {str(exc)[:200]}); "
            f"install a supported release: pip install '{SDK_REQUIREMENT}'"
        )
        return self._incompatible

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one SDK call. Errors after a reply arrived are a reply the SDK could not parse
        (retryable); other errors of the SDK's are an incompatible SDK (raised once)."""
        from goodfire.api.exceptions import GoodfireBaseException, ServerErrorException

        REPLY_RECEIVED.set(False)
        try:
            return await call()
        except (TransientError, PrerequisiteError, GoodfireRequestError):
            raise
        except Exception as exc:
            if REPLY_RECEIVED.get() and (
                isinstance(exc, ServerErrorException)
                or not isinstance(exc, GoodfireBaseException)
            ):
                raise TransientError(
                    f"malformed {what} reply from the Goodfire API at {self.base_url} "
                    f"({type(exc).__name__}: {str(exc)[:200]})"
                ) from None
            raise self._incompatible_sdk(what, exc) from None

    @contextmanager
    def _reading(self, what: str) -> Iterator[None]:
        """Read what the SDK returned: bad values are a malformed reply; objects without the
        shape this backend was written against are an incompatible SDK."""
        try:
            yield
        except _Malformed as exc:
            raise TransientError(
                f"malformed {what} reply from the Goodfire API at {self.base_url} ({exc})"
            ) from None
        except Exception as exc:
            raise self._incompatible_sdk(what, exc) from None

    @staticmethod
    def _feature(f: Any, value: float = 0.0, index: Any = None) -> FeatureEdit:
        """A FeatureEdit from an SDK ``Feature``; values the API sent wrong are _Malformed."""
        uuid, label = f.uuid, f.label  # AttributeError: not the SDK's Feature
        idx = f.index_in_sae if index is None else index
        try:
            return FeatureEdit(id=sdk_feature_id(uuid), index=idx, label=label, value=value)
        except ValidationError as exc:
            raise _Malformed(f"invalid feature {idx!r}: {exc.errors()[0]['msg']}") from None

    def _wire_id(self, feature_id: str) -> str:
        """The uuid to give the SDK's Feature (sent unchanged by Feature.json()): the stored id
        (already as the SDK sends it) or that id reformatted; a non-UUID id goes as it is."""
        if self.feature_ids == "sdk":
            return feature_id
        try:
            u = UUID(feature_id)
        except ValueError:
            return feature_id
        return u.hex if self.feature_ids == "hex" else str(u)

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
                # a str uuid is sent unchanged by Feature.json(): exactly the id we chose
                wire: Any = self._wire_id(e.id)
                feat = goodfire.Feature(uuid=wire, label=e.label, index_in_sae=e.index)
                variant.set(feat, e.value)
            model = variant
        messages = [dict(m) for m in request.messages]
        if self.system_prompt and not any(m.get("role") == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        client = self._client()
        reply = await self._call(
            "chat completion",
            lambda: client.chat.completions.create(
                messages,
                model=model,
                stream=False,
                max_completion_tokens=request.max_tokens,
                top_p=self.top_p,
                temperature=request.temperature,
                stop=self.stop,
                seed=request.seed,
                system_prompt=self.sdk_system_prompt,  # the SDK puts it first when not ""
            ),
        )
        with self._reading("chat completion"):
            if not reply.choices:
                raise _Malformed("no choices")
            choice = reply.choices[0]
            message = choice.message
            if not isinstance(message, Mapping):
                raise TypeError(f"a reply message is a {type(message).__name__}, not a dict")
            text = message.get("content")
            if not isinstance(text, str):
                raise _Malformed("message content is not text")
            finish, served = choice.finish_reason, reply.model
        return GenerationResult(
            text=text,
            finish_reason=finish,
            extra={"served_model": served, "n_feature_edits": len(edits)},
        )

    # -- extras used by methods ---------------------------------------------------------------
    async def autosteer(self, query_text: str) -> list[dict[str, Any]]:
        """Auto Steer: the feature edits Goodfire proposes for ``query_text`` on this model."""
        client = self._client()
        result = await self._call(
            "Auto Steer",
            lambda: client.features.AutoSteer(specification=query_text, model=self.model),
        )
        with self._reading("Auto Steer"):
            pairs = list(result.as_dict().items())
            out = []
            for f, v in pairs:
                if isinstance(v, bool) or not isinstance(v, int | float):
                    raise _Malformed(f"edit strength {v!r} is not a number")
                out.append(self._feature(f, float(v)).model_dump())
        return out

    async def search_features(self, query_text: str, k: int = 10) -> list[dict[str, Any]]:
        """Feature search: up to ``k`` features for ``query_text``, most relevant first."""
        client = self._client()
        group = await self._call(
            "feature search",
            lambda: client.features.search(query_text, model=self.model, top_k=int(k)),
        )
        with self._reading("feature search"):
            found = [self._feature(f) for f in group]
        return [f.model_dump(exclude={"value"}) for f in found]

    async def lookup_features(self, indices: list[int]) -> list[dict[str, Any]]:
        """Features by SAE index (those the model does not have are absent from the result)."""
        client = self._client()
        found = await self._call(
            "feature lookup",
            lambda: client.features.lookup([int(i) for i in indices], model=self.model),
        )
        with self._reading("feature lookup"):
            out = [self._feature(f, index=idx) for idx, f in sorted(found.items())]
        return [f.model_dump(exclude={"value"}) for f in out]


__all__ = [
    "GoodfireBackend",
    "GoodfireRequestError",
    "GoodfireUnreachable",
    "sdk_feature_id",
    "check_sdk",
    "parse_retry_after",
]
