"""The dry run counts the methods' own resolution calls (Auto Steer, feature searches, the
agentic picker's replies) once per query x model, shared calls once and cached ones not at all,
and estimates wall time from stated per-call latencies at the configured concurrency."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from steerstats.collect import collect, estimate
from steerstats.collect.printing import print_estimate
from steerstats.collect.status import DryRunReport
from steerstats.config import Experiment, init_experiment, load_config
from steerstats.items import Query
from steerstats.methods import create_method
from steerstats.methods.base import MethodContext
from tests.fake_openai_server import FakeOpenAIServer
from tests.goodfire_server import GoodfireServer

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GOODFIRE_API_KEY", "OPENAI_API_KEY", "GOODFIRE_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[GoodfireServer, FakeOpenAIServer]]:
    with GoodfireServer() as gf, FakeOpenAIServer(api_key="sk-dry-test") as oa:
        monkeypatch.setenv("GOODFIRE_API_KEY", gf.api_key)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-dry-test")
        yield gf, oa


def preset(tmp_path: Path, name: str, gf: GoodfireServer | None = None,
           oa: FakeOpenAIServer | None = None, edit: Any = None) -> Experiment:
    """A paper preset, optionally pointed at the fake servers and edited."""
    text = init_experiment(tmp_path / f"{name}.toml", preset=name).read_text()
    if gf is not None and oa is not None:
        text = text.replace("options = { sdk_system_prompt",
                            f'options = {{ base_url = "{gf.url}", sdk_system_prompt')
        text = text.replace('model = "gpt-4o-mini"\n',
                            f'model = "gpt-4o-mini"\noptions = {{ base_url = "{oa.url}" }}\n')
    if edit is not None:
        text = edit(text)
    path = tmp_path / f"{name}-x.toml"
    path.write_text(text)
    return load_config(path)


def resolve_rows(rep: DryRunReport) -> dict[tuple[str, str], tuple[int, int, int, int]]:
    """(model, method) -> (units, cached, to run, calls) of the "resolve" rows."""
    return {(r.model, r.method): (r.tasks, r.cached, r.to_run, r.calls)
            for r in rep.rows if r.stage == "resolve"}


def printed(rep: DryRunReport) -> str:
    buf = io.StringIO()
    print_estimate(Console(file=buf, width=200), rep)
    return buf.getvalue()


def test_paper_counts_auto_steer_twice_search_and_picker_per_query_x_model(
        tmp_path: Path) -> None:
    rep = estimate(preset(tmp_path, "paper"))
    rows = resolve_rows(rep)
    for model in ("Llama-3.1-8B", "Llama-3.3-70B"):
        assert rows[model, "autosteer"] == (14, 0, 14, 14)
        assert rows[model, "autosteer+prompt"] == (14, 0, 14, 14)  # its own call (difference 6)
        assert rows[model, "agentic"] == (14, 0, 14, 28)  # a search and a picker reply
        assert (model, "control") not in rows and (model, "prompt") not in rows  # no calls
    agentic = next(r for r in rep.rows if (r.method, r.stage) == ("agentic", "resolve"))
    # the picker's replies are budgeted at its max_tokens, 2048, at the 70B model's price
    assert agentic.output_tokens == 14 * 2048 and agentic.cost_usd and agentic.cost_usd > 0
    assert rep.resolve_max_calls == 2 * 14 * (1 + 1 + 1 + 3)  # picker retries: 3 attempts
    assert rep.unestimated_units == 0
    total = rep.totals()
    assert total.calls == sum(r.calls for r in rep.rows)
    assert total.tasks == rep.generations + rep.judgements  # resolve units are not tasks


def test_paper_corrected_shares_the_auto_steer_call(tmp_path: Path) -> None:
    rows = resolve_rows(estimate(preset(tmp_path, "paper-corrected")))
    assert rows["Llama-3.1-8B", "autosteer"] == (14, 0, 14, 14)
    assert rows["Llama-3.1-8B", "autosteer+prompt"] == (14, 0, 14, 0)  # autosteer's call


def test_a_strength_sweep_resolves_with_one_call_per_query(tmp_path: Path) -> None:
    cfg = preset(tmp_path, "paper-corrected", edit=lambda t: t.replace(
        "# strengths = [0, 0.5, 1, 1.5]", "strengths = [0, 0.5, 1, 1.5]"))
    rows = resolve_rows(estimate(cfg, limit_queries=2))
    assert rows["Llama-3.1-8B", "autosteer"] == (8, 0, 8, 2)


def test_wall_time_from_the_stated_latencies_and_concurrency(tmp_path: Path) -> None:
    cfg = preset(tmp_path, "paper")
    rep = estimate(cfg, limit_queries=2, limit_prompts=1)
    assert rep.assumed == {"Auto Steer": 14.0, "feature search/lookup": 1.0,
                           "Goodfire chat": 7.0, "OpenAI chat": 3.0}
    assert rep.concurrency == {"goodfire": 8, "openai": 16}
    # resolving: per query x model 2 Auto Steer (14 s), a search (1 s), a picker reply (7 s)
    # on the goodfire group of 8: 2 x 2 x (28 + 1 + 7) / 8 = 18 s
    assert rep.resolve_wall_s == pytest.approx(18.0)
    gens = sum(r.calls for r in rep.rows if r.stage == "generate")
    judged = sum(r.calls for r in rep.rows if "gpt-4o-mini" in r.stage)
    assert rep.wall_s == pytest.approx(18.0 + gens * 7 / 8 + judged * 3 / 16)
    text = printed(rep)
    assert "Auto Steer ~14 s, feature search/lookup ~1 s, Goodfire chat ~7 s, OpenAI chat ~3 s" \
        in text
    assert "at concurrency goodfire 8, openai 16" in text and "wall time ~" in text


def test_the_longest_resolution_bounds_the_resolving_time(tmp_path: Path) -> None:
    # with room for every call at once, resolving takes as long as its longest chain
    cfg = preset(tmp_path, "paper", edit=lambda t: t.replace(
        "backends = { goodfire = 8, openai = 16 }", "backends = { goodfire = 1000, openai = 16 }"))
    rep = estimate(cfg, limit_queries=1, limit_prompts=1)
    assert rep.resolve_wall_s == pytest.approx(14.0)  # one Auto Steer call


def test_cached_resolutions_are_free_and_the_estimate_matched_the_run(
        tmp_path: Path, servers: tuple[GoodfireServer, FakeOpenAIServer]) -> None:
    gf, oa = servers
    cfg = preset(tmp_path, "paper", gf, oa)
    before = estimate(cfg, limit_queries=1, limit_prompts=1)
    planned = sum(c for *_, c in resolve_rows(before).values())
    summary = collect(cfg, limit_queries=1, limit_prompts=1, progress=False)
    assert summary.complete
    picks = [p for e, p in gf.requests if e == "chat"
             and "Candidate features:" in p["messages"][-1]["content"]]
    made = gf.served["autosteer"] + gf.served["search"] + len(picks)
    assert planned == made == 2 * (2 + 1 + 1)
    after = estimate(cfg, limit_queries=1, limit_prompts=1)
    rows = resolve_rows(after)
    assert all(calls == 0 and cached == units for units, cached, _, calls in rows.values())
    assert after.totals().calls == 0 and after.resolve_max_calls == 0
    # more queries: only the new ones' resolutions are counted
    more = resolve_rows(estimate(cfg, limit_queries=2, limit_prompts=1))
    assert more["Llama-3.1-8B", "agentic"] == (2, 1, 1, 2)


def test_a_cached_search_leaves_only_the_pick_with_its_real_key(tmp_path: Path) -> None:
    """The agentic hook's pick key, once the search is cached, is the key resolve() uses."""
    recorded: dict[str, dict[str, Any]] = {}

    class Recorder:
        async def get_or_compute(self, namespace: str, key: Any, compute: Any) -> Any:
            if namespace not in recorded:
                recorded[namespace] = {"key": key, "value": await compute()}
            return recorded[namespace]["value"]

    class Backend:
        name, model, options = "goodfire", "m", {}

        def identity(self) -> dict[str, Any]:
            return {"name": self.name, "model": self.model}

        async def search_features(self, text: str, k: int) -> list[dict[str, Any]]:
            return [{"id": f"f{i}", "index": i, "label": f"feature {i}"} for i in range(k)]

        async def generate(self, request: Any) -> Any:
            from steerstats.backends.base import GenerationResult

            return GenerationResult(text="<features><feature><number>1</number><strength>0.5"
                                         "</strength></feature></features>")

    import asyncio

    method = create_method("agentic", {"picker": "p", "candidates": 3, "answer_format": "xml"})
    backend: Any = Backend()
    ctx = MethodContext(backend=backend, cache=Recorder(), chat_backend=lambda _: backend)
    query = Query("q", "be funny")
    asyncio.run(method.resolve(query, None, ctx))

    def cached(namespace: str, key: Any) -> tuple[bool, Any]:
        hit = recorded.get(namespace)
        return (True, hit["value"]) if hit is not None and hit["key"] == key else (False, None)

    calls = method.estimate_resolution(query, None, ctx, cached)
    assert calls is not None and [c.kind for c in calls] == ["feature search", "chat"]
    search, pick = calls
    assert cached(search.namespace, search.key)[0]  # the dry run will drop it
    assert pick.key == recorded["agentic.pick"]["key"] and cached(pick.namespace, pick.key)[0]
    assert pick.request is not None and "feature 2" in pick.request.messages[-1]["content"]


def test_a_method_without_an_estimate_is_named_as_uncounted(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text("""
[experiment]
name = "t"
cache_dir = "cache"
plugins = ["tests.collect_plugins"]

[[models]]
label = "target"
backend = "openai"
model = "gpt-4o-mini"

[[helpers]]
label = "helper"
backend = "openai"
model = "gpt-4o-mini"

[[methods]]
name = "test-picker"
params = { helper = "helper" }

[queries]
items = [{ text = "be brief" }, { text = "be kind" }]

[prompts.open]
items = [{ text = "Hello there." }]
""")
    rep = estimate(load_config(path))
    assert rep.unestimated_units == 2
    assert resolve_rows(rep)["target", "test-picker"] == (2, 0, 2, 0)
    text = printed(rep)
    assert "2 method resolution(s) still need backend calls that their method does not " \
           "estimate" in text
    # OpenAI's hosted API: the assumed 3 s a call gives a wall time without --check
    assert rep.wall_s == pytest.approx(2 * 3.0 / rep.concurrency["openai"])


def test_the_cli_dry_run_prints_resolve_rows_and_wall_time(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    from steerstats.cli import main

    init_experiment(tmp_path / "p.toml", preset="paper")
    old, sys.argv = sys.argv, ["steerstats", "collect", str(tmp_path / "p.toml"), "--dry-run",
                               "--limit-queries", "1"]
    try:
        main()
    except SystemExit as exc:
        assert not exc.code
    finally:
        sys.argv = old
    out = capsys.readouterr().out
    assert re.search(r"Llama-3\.3-70B\s*│\s*agentic\s*│\s*resolve", out)
    assert "per-call latencies assumed" in out and "wall time ~" in out


def test_caa_and_its_random_placebo_estimate_the_one_vector_they_share() -> None:
    """caa's hook names the resolution-cache entry its vector() memoises; random shares it, so
    the dry run counts one build per query x model for both; strength 0 builds nothing."""
    import asyncio

    recorded: list[tuple[str, Any]] = []

    class Recorder:
        async def get_or_compute(self, namespace: str, key: Any, compute: Any) -> Any:
            recorded.append((namespace, key))
            return await compute()

    class Local:
        name, model, options = "local", "tiny", {}

        def identity(self) -> dict[str, Any]:
            return {"name": self.name, "model": self.model}

        def add_vector_dir(self, path: str) -> None:
            pass

        def has_vector(self, digest: str) -> bool:
            return True

        async def build_caa_vector(self, **kwargs: Any) -> dict[str, Any]:
            return {"digest": "d" * 64, "layer": 1}

    backend: Any = Local()
    ctx = MethodContext(backend=backend, cache=Recorder())
    query = Query("q", "be funny")
    caa = create_method("caa", {})
    asyncio.run(caa.resolve(query, 1.0, ctx))
    none: Any = lambda ns, key: (False, None)  # noqa: E731
    for name in ("caa", "random"):
        calls = create_method(name, {}).estimate_resolution(query, 1.0, ctx, none)
        assert calls is not None and [(c.kind, c.namespace, c.key) for c in calls] == [
            ("vector", *recorded[0])]
        assert create_method(name, {}).estimate_resolution(query, 0.0, ctx, none) == []
