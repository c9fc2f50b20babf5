"""The collection layer: experiment -> plan -> run -> cache -> tidy tables (DESIGN.md).

Nothing outside this package needs it except the CLI: the statistics, the analysis and the
report read a results directory through :mod:`steerstats.results`.

- :mod:`~steerstats.collect.session`: one run's backends, methods, judges, cache and meter
- :mod:`~steerstats.collect.plan`: the task grid with cache keys
- :mod:`~steerstats.collect.run`: executing a plan (concurrency, retries, budget, progress)
- :mod:`~steerstats.collect.tasks`: one task at a time: claim, call, store, tally
- :mod:`~steerstats.collect.ledger`: attempts (spend) and claims shared by every process
- :mod:`~steerstats.collect.check`: ``collect --check`` (latency, parsing, suggestions)
- :mod:`~steerstats.collect.maintenance`: ``steerstats cache check``
- :mod:`~steerstats.collect.status`: spend, the dry-run estimate and ``status``
- :mod:`~steerstats.collect.export`: cache -> tables -> a results directory
- :mod:`~steerstats.collect.cache`, :mod:`~steerstats.collect.metering`: storage and the meter
- :mod:`~steerstats.collect.inputs`: the experiment's queries and prompts
- :mod:`~steerstats.collect.printing`: the CLI's tables for the above
"""

from steerstats.collect.export import export, tables
from steerstats.collect.plan import (
    GenerationTask,
    JudgeTask,
    Plan,
    generation_key,
    judgement_key,
    plan,
    with_plan,
)
from steerstats.collect.run import RunSummary, acollect, collect, run
from steerstats.collect.session import Session
from steerstats.collect.status import (
    DryRunReport,
    StatusReport,
    estimate,
    recorded_usage,
    status,
)

__all__ = [
    "DryRunReport",
    "GenerationTask",
    "JudgeTask",
    "Plan",
    "RunSummary",
    "Session",
    "StatusReport",
    "acollect",
    "collect",
    "estimate",
    "export",
    "generation_key",
    "judgement_key",
    "plan",
    "recorded_usage",
    "run",
    "status",
    "tables",
    "with_plan",
]
