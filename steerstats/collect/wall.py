"""The dry run's wall-time estimate: seconds per call (measured by ``collect --check``, else an
assumed typical latency per backend and kind of call) and the busy time of each concurrency
group divided by its limit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from steerstats.collect.check import _LOCAL, latency_key

__all__ = ["ASSUMED_LATENCY_S", "WallClock"]

# Typical seconds per call when `collect --check` has measured nothing: (backend, kind) ->
# (seconds, how the dry run names it). Long replies (max_tokens 2048) take longer.
ASSUMED_LATENCY_S: dict[tuple[str, str], tuple[float, str]] = {
    ("goodfire", "autosteer"): (14.0, "Auto Steer"),
    ("goodfire", "feature search"): (1.0, "feature search/lookup"),
    ("goodfire", "feature lookup"): (1.0, "feature search/lookup"),
    ("goodfire", "chat"): (7.0, "Goodfire chat"),
    ("openai", "chat"): (3.0, "OpenAI chat"),
}


@dataclass
class WallClock:
    """Backend-seconds per concurrency group for one phase of a run (resolving, then tasks)."""

    ledger: Any
    busy: dict[str, float] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)
    assumed: dict[str, float] = field(default_factory=dict)  # name -> seconds, those used
    measured: set[str] = field(default_factory=set)
    _measured: dict[str, float | None] = field(default_factory=dict)

    def latency(self, backend: Any, kind: str = "chat") -> float | None:
        """Seconds per ``kind`` call on ``backend``: measured (chat only), else assumed."""
        label = f"{backend.name}/{backend.model}"
        if kind == "chat":
            ident = latency_key(backend.identity())
            if ident not in self._measured:
                got = self.ledger.get_meta(ident)
                self._measured[ident] = None if got is None else float(got["latency_s"])
            if self._measured[ident] is not None:
                self.measured.add(label)
                return self._measured[ident]
        assumed = ASSUMED_LATENCY_S.get((backend.name, kind))
        local = any(m in str(backend.options.get("base_url") or "") for m in _LOCAL)
        if assumed is None or (backend.name == "openai" and local):
            self.unknown.add(label if kind == "chat" else f"{label} ({kind})")
            return None
        self.assumed[assumed[1]] = assumed[0]
        return assumed[0]

    def occupy(self, backend: Any, calls: int, kind: str = "chat") -> float | None:
        """Count ``calls`` on ``backend``'s group; the seconds of one (None: unknown)."""
        lat = self.latency(backend, kind)
        if lat is not None:
            self.busy[backend.name] = self.busy.get(backend.name, 0.0) + calls * lat
        return lat

    def seconds(self, limit_for: Any) -> float:
        """The phase's wall time: each group's busy time over its concurrency limit, the groups
        one after another (an upper bound when they overlap)."""
        return sum(secs / limit_for(name) for name, secs in self.busy.items())
