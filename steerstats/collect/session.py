"""One run's live objects: backends (one per distinct backend/model/options), methods, judges,
the cache and the meter; and running a coroutine from sync code."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from steerstats.backends import create_backend
from steerstats.backends.base import Backend
from steerstats.collect.cache import Cache
from steerstats.collect.ledger import new_owner
from steerstats.collect.metering import (
    Budget,
    Meter,
    MeteredBackend,
    NeedsResolution,
    Price,
    RetryPolicy,
)
from steerstats.config import Experiment, JudgeSpec, ModelSpec
from steerstats.errors import ConfigError
from steerstats.judges import create_judge, default_repeats
from steerstats.judges.base import Judge
from steerstats.keys import canonical_json
from steerstats.methods import create_method
from steerstats.methods.base import Method, MethodContext

__all__ = ["Session", "run_sync"]

T = TypeVar("T")


class _DryResolutionCache:
    """Serves cached resolutions; anything not cached would need a call: NeedsResolution."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache

    async def get_or_compute(self, namespace: str, key: Any, compute: Any) -> Any:
        found, value = self._cache.peek_resolution(namespace, key)
        if not found:
            raise NeedsResolution(namespace)
        return value


class Session:
    """Backends (one instance per distinct backend/model/options), method and judge objects,
    the cache and the :class:`Meter` for one experiment. ``dry`` sessions make no calls."""

    def __init__(self, config: Experiment, *, cache: Cache | None = None,
                 dry: bool = False) -> None:
        self.config = config
        self._own_cache = cache is None
        self.cache = cache if cache is not None else Cache(config.cache_path)
        # Who this run is in the ledger (its claims and attempts).
        self.owner = new_owner()
        self.meter = Meter(
            budget=Budget(config.budget.max_usd, config.budget.max_calls,
                          ledger=self.cache.ledger, scope=config.experiment.name,
                          owner=self.owner),
            retry=RetryPolicy(**config.retries.model_dump()),
            pricing={k: Price(v.input, v.output) for k, v in config.pricing.items()},
            concurrency=config.concurrency.backends,
            default_concurrency=config.concurrency.default,
            dry=dry,
            seed=config.experiment.seed,
        )
        self._raw: dict[str, Backend] = {}
        self._by_label: dict[str, MeteredBackend] = {}
        self._judge_proxies: dict[str, MeteredBackend | None] = {}
        self.methods: dict[str, Method] = {
            ms.column: create_method(ms.name, dict(ms.params)) for ms in config.methods
        }
        self.judges: dict[str, Judge] = {}
        self.judge_specs: dict[str, JudgeSpec] = {js.label: js for js in config.judges}
        self.repeats: dict[str, int] = {}
        for js in config.judges:
            n = js.repeats if js.repeats is not None else default_repeats(js.name)
            self.repeats[js.label] = n
            self.judges[js.label] = create_judge(js.name, dict(js.params), repeats=n)

    @property
    def dry(self) -> bool:
        return self.meter.dry

    @dry.setter
    def dry(self, value: bool) -> None:
        self.meter.dry = value

    def _backend(self, backend: str, model: str, options: dict[str, Any], where: str) -> Backend:
        ident = canonical_json([backend, model, options])
        b = self._raw.get(ident)
        if b is None:
            try:
                b = create_backend(backend, model, dict(options))
            except ConfigError as exc:
                raise ConfigError(f"{self.config.path}: {where}: {exc}") from None
            self._raw[ident] = b
        return b

    def _spec_backend(self, spec: ModelSpec, where: str) -> Backend:
        return self._backend(spec.backend, spec.model, spec.options, where)

    def model_backend(self, label: str) -> MeteredBackend:
        """The metered backend of the model (or helper) labelled ``label``."""
        proxy = self._by_label.get(label)
        if proxy is not None:
            return proxy
        for section, specs in (("models", self.config.models), ("helpers", self.config.helpers)):
            for i, spec in enumerate(specs):
                if spec.name == label:
                    proxy = self.meter.wrap(self._spec_backend(spec, f"{section}[{i}]"))
                    self._by_label[label] = proxy
                    return proxy
        valid = ", ".join(m.name for m in (*self.config.models, *self.config.helpers))
        raise ConfigError(f"no model or helper labelled {label!r}; valid labels: {valid}")

    chat_backend = model_backend

    def judge_backend(self, label: str) -> MeteredBackend | None:
        """The metered chat backend of judge ``label`` (None for computed judges)."""
        if label in self._judge_proxies:
            return self._judge_proxies[label]
        js = self.judge_specs[label]
        proxy = None
        if js.backend is not None and js.model is not None:
            i = self.config.judges.index(js)
            proxy = self.meter.wrap(self._backend(js.backend, js.model, js.options,
                                                  f"judges[{i}]"))
        self._judge_proxies[label] = proxy
        return proxy

    def judge_identity(self, label: str) -> dict[str, Any]:
        """What keys judge ``label``'s answers: the judge's identity and the entry's rater."""
        return {**self.judges[label].identity(), "rater": self.judge_specs[label].rater_label}

    def context(self, model_label: str) -> MethodContext:
        """What a method may use while resolving for ``model_label``."""
        cache: Any = _DryResolutionCache(self.cache) if self.dry else self.cache
        return MethodContext(
            backend=self.model_backend(model_label),
            cache=cache,
            chat_backend=self.chat_backend,
            cache_dir=str(self.config.cache_path),
        )

    async def aclose(self) -> None:
        for b in self._raw.values():
            await b.aclose()
        self._raw.clear()
        self._by_label.clear()
        self._judge_proxies.clear()
        if self._own_cache:
            self.cache.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def run_sync(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, also when an event loop is already running
    in this thread (Jupyter, Quarto): then in a worker thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()
