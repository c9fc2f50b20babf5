"""presets/paper.toml is the seed study as it was run; presets/paper-corrected.toml the same
design with what we think the study got wrong corrected (issue 16). Checked three ways: the
loaded parameters against the issue's table of differences 1-8, `init` + `collect --dry-run` on
the command line (no key, no server), and a small collect against the fake Goodfire and OpenAI
servers, reading the requests the study's design puts on the wire."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from steerstats.backends import create_backend
from steerstats.collect import collect, estimate
from steerstats.config import Experiment, init_experiment, load_config, preset_names
from tests.fake_openai_server import FakeOpenAIServer
from tests.goodfire_server import SUPPORTED_MODELS, GoodfireServer

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[1]
LLAMA_8B, LLAMA_70B = SUPPORTED_MODELS
STUDY_TEMPLATE = "When answering, please {query}."
BASE_SYSTEM = "You are a helpful assistant."
MMLU_SYSTEM = (  # the study's MMLU system message (its Control rows)
    "You are a helpful assistant.\nFirst, think step-by-step inside <thinking>...</thinking> "
    "tags.\nYou MUST NOT write any reasoning outside the <thinking> block.\nThen, give only the "
    "final answer inside <answer>...</answer> tags."
)
N_QUERIES, N_OPEN, N_MMLU = 14, 10 + 20, 171
METHODS = ["control", "prompt", "autosteer", "autosteer+prompt", "agentic"]

# Issue 16's differences 1-8: the study's value (paper) and ours where we correct it.
STUDY = {
    "sdk_system_prompt": True,  # 1
    "max_tokens": 2048,  # 2
    "picker": ("Llama-3.3-70B", 10, 3, -0.6, 0.6, 0.0, 2048, 42, "xml"),  # 3
    "template": STUDY_TEMPLATE,  # 4
    "seed": 42,  # 5
    "judge": (0.0, 1),  # 5: temperature, repeats
    "reuse_autosteer": False,  # 6
    "timeout_s": "sdk",  # 7
    "feature_ids": "sdk",  # 8
    "crossed": False,
}
CORRECTED = {
    **STUDY,
    "sdk_system_prompt": False,
    "judge": (0.7, 3),
    "reuse_autosteer": True,
    "crossed": True,
}


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("GOODFIRE_API_KEY", "OPENAI_API_KEY", "GOODFIRE_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)  # a dry run needs neither key nor server


def preset(tmp_path: Path, name: str) -> Experiment:
    return load_config(init_experiment(tmp_path / f"{name}.toml", preset=name))


def params(cfg: Experiment, method: str) -> dict[str, Any]:
    return next(m.params for m in cfg.methods if m.name == method)


@pytest.mark.parametrize(("name", "want"), [("paper", STUDY), ("paper-corrected", CORRECTED)])
def test_the_presets_set_each_difference(tmp_path: Path, name: str, want: dict[str, Any]) -> None:
    assert name in preset_names()  # what `steerstats init --preset` lists
    cfg = preset(tmp_path, name)
    assert [(m.name, m.backend, m.model) for m in cfg.models] == [
        ("Llama-3.1-8B", "goodfire", LLAMA_8B),
        ("Llama-3.3-70B", "goodfire", LLAMA_70B),
    ]
    assert [m.name for m in cfg.methods] == METHODS
    for m in cfg.models:
        assert m.options == {
            "sdk_system_prompt": want["sdk_system_prompt"],
            "system_prompt": BASE_SYSTEM,
            "timeout_s": want["timeout_s"],
            "feature_ids": want["feature_ids"],
        }
    assert (cfg.sampling.max_tokens, cfg.sampling.seed, cfg.sampling.samples) == (
        want["max_tokens"], want["seed"], 1,
    )
    assert cfg.sampling.temperature == 0.6  # the SDK's default, kept by the study
    a = params(cfg, "agentic")
    assert (
        a["picker"], a["candidates"], a["max_features"], a["min_strength"], a["max_strength"],
        a["temperature"], a["max_tokens"], a["seed"], a["answer_format"],
    ) == want["picker"]
    picker = next(m for m in cfg.models if m.name == a["picker"])
    assert (picker.backend, picker.model) == ("goodfire", LLAMA_70B)
    assert params(cfg, "prompt") == {"template": want["template"]}
    assert params(cfg, "autosteer+prompt") == {
        "template": want["template"], "reuse_autosteer": want["reuse_autosteer"],
    }
    rubric = {(j.name, j.model, j.params["temperature"], j.repeats) for j in cfg.judges if j.model}
    assert rubric == {(n, "gpt-4o-mini", *want["judge"]) for n in ("behavior", "coherence")}
    assert cfg.prompts.open is not None and cfg.prompts.open.crossed is want["crossed"]
    assert cfg.retries.timeout_s is not None and cfg.retries.timeout_s > 320  # the SDK's first


@pytest.mark.parametrize("name", ["paper", "paper-corrected"])
def test_the_preset_options_make_the_study_requests(
    tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from goodfire.api.chat.client import DEFAULT_SYSTEM_PROMPT

    cfg = preset(tmp_path, name)
    backend: Any = create_backend("goodfire", LLAMA_70B, cfg.models[1].options)
    sdk_prompt = backend.identity()["options"]["sdk_system_prompt"]
    assert sdk_prompt == (DEFAULT_SYSTEM_PROMPT if name == "paper" else "")
    # (7) the SDK's timeouts: create(timeout=320), AutoSteer(timeout=60), the wrapper's 10
    assert [backend._transport.read_timeout(t) for t in (320, 60, None)] == [320.0, 60.0, 10.0]


def run_cli(*args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    out = subprocess.run(
        [sys.executable, "-m", "steerstats", *args],
        capture_output=True, text=True, cwd=cwd, timeout=150,
        env={**env, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_init_then_dry_run_shows_the_seed_design(tmp_path: Path) -> None:
    assert "wrote x.toml (preset 'paper')" in run_cli("init", "x.toml", "--preset", "paper",
                                                      cwd=tmp_path)
    text = run_cli("collect", "x.toml", "--dry-run", cwd=tmp_path)
    gens = 2 * len(METHODS) * N_QUERIES * (N_OPEN + N_MMLU)
    # behaviour and coherence judged once each (the study's one score per row), MMLU graded
    judged = 2 * gens + 2 * len(METHODS) * N_QUERIES * N_MMLU
    assert f"dry run: {gens} generation tasks, {judged} judge tasks" in text
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line)[1:-1]]
        if len(cells) == 10 and cells[3].isdigit():
            rows[(cells[0], cells[1], cells[2])] = cells
    for model in ("Llama-3.1-8B", "Llama-3.3-70B"):
        for method in METHODS:
            tasks, _, to_run, calls, _, out_tokens, cost = rows[(model, method, "generate")][3:]
            assert int(tasks) == N_QUERIES * (N_OPEN + N_MMLU)
            # (2) every generation may write 2048 tokens, and is budgeted so
            assert int(out_tokens.replace(",", "")) == int(to_run) * 2048 == int(calls) * 2048
            assert cost.startswith("$")
            for judge in ("behavior/gpt-4o-mini", "coherence/gpt-4o-mini"):
                assert int(rows[(model, method, judge)][3]) == int(tasks)
    total = rows[("total", "", "")]
    assert float(total[9].lstrip("$").replace(",", "")) < 100  # within the preset's max_usd
    # the methods' resolutions, per query x model: Auto Steer twice (difference 6), a feature
    # search and a picker reply on Llama-3.3-70B at 2048 tokens (3), counted and priced
    for model in ("Llama-3.1-8B", "Llama-3.3-70B"):
        for method, calls, out in (("autosteer", 1, 0), ("autosteer+prompt", 1, 0),
                                   ("agentic", 2, 2048)):
            units, cached, to_run, n, _, out_tokens, _ = rows[(model, method, "resolve")][3:]
            assert (int(units), int(cached), int(to_run)) == (N_QUERIES, 0, N_QUERIES)
            assert int(n) == calls * N_QUERIES
            assert int(out_tokens.replace(",", "")) == out * N_QUERIES
    assert f"resolve calls: up to {2 * N_QUERIES * 6} if every picker answer" in text
    resolves = 2 * N_QUERIES * 4
    assert int(total[6]) == resolves + sum(
        int(c[6]) for k, c in rows.items() if k[2] not in ("resolve", ""))
    # wall time from the stated latencies at the preset's concurrency
    assert re.search(r"wall time ~\d+\.\d h \(resolving methods ~\d+ min, then the tasks\) at "
                     r"concurrency goodfire 8, openai 16", text)
    assert "Auto Steer ~14 s, feature search/lookup ~1 s, Goodfire chat ~7 s" in text
    report = estimate(load_config(tmp_path / "x.toml"))
    assert (report.generations, report.judgements) == (gens, judged)


# -- the requests on the wire, against the fake servers ---------------------------------------


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[GoodfireServer, FakeOpenAIServer]]:
    with GoodfireServer() as gf, FakeOpenAIServer(api_key="sk-paper-test") as oa:
        monkeypatch.setenv("GOODFIRE_API_KEY", gf.api_key)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-paper-test")
        yield gf, oa


def pointed_at(tmp_path: Path, name: str, gf: GoodfireServer, oa: FakeOpenAIServer) -> Path:
    """The preset with its models on the fake Goodfire API and its judges on the fake OpenAI."""
    text = init_experiment(tmp_path / f"{name}.toml", preset=name).read_text()
    text = text.replace("options = { sdk_system_prompt", f'options = {{ base_url = "{gf.url}", '
                        "sdk_system_prompt")
    text = text.replace('model = "gpt-4o-mini"\n',
                        f'model = "gpt-4o-mini"\noptions = {{ base_url = "{oa.url}" }}\n')
    path = tmp_path / f"{name}-local.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["paper", "paper-corrected"])
def test_a_small_run_sends_the_study_requests(
    tmp_path: Path, servers: tuple[GoodfireServer, FakeOpenAIServer], name: str
) -> None:
    from goodfire.api.chat.client import DEFAULT_SYSTEM_PROMPT

    gf, oa = servers
    cfg = load_config(pointed_at(tmp_path, name, gf, oa))
    summary = collect(cfg, limit_queries=1, limit_prompts=1, progress=False)
    assert summary.complete and not gf.rejected  # every request met the API's schema
    query = "be funny"
    chats = [p for e, p in gf.requests if e == "chat"]
    picks = [p for p in chats if "Candidate features:" in p["messages"][-1]["content"]]
    generations = [p for p in chats if p not in picks]
    sdk = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}] if name == "paper" else []
    systems = Counter()
    for p in generations:
        # (1) the SDK's prompt first (paper only), then the study's or the prompt method's
        own = p["messages"][len(sdk)]
        assert p["messages"][: len(sdk)] == sdk and own["role"] == "system"
        mmlu = "This is a Chain-of-Thought (CoT) task." in p["messages"][-1]["content"]
        systems["mmlu" if mmlu else "open", own["content"]] += 1
        # (2) 2048 tokens, (5) seed 42, at the SDK's default temperature
        assert (p["max_completion_tokens"], p["seed"], p["temperature"]) == (2048, 42, 0.6)
        for iv in p.get("controller", {}).get("interventions", []):
            for f in iv["features"]["features"]:
                assert re.fullmatch(r"[0-9a-f]{32}", f["uuid"])  # (8) as the SDK sends ids
    # (4) the study's template replaces the system message; the others keep the study's own,
    # on MMLU the one with its chain-of-thought instruction (and its question wording above)
    prompted = STUDY_TEMPLATE.format(query=query)
    assert set(systems) == {("open", BASE_SYSTEM), ("open", prompted), ("mmlu", MMLU_SYSTEM),
                            ("mmlu", prompted)}
    # (3) the picker: Llama-3.3-70B on Goodfire, temperature 0, XML, 2048 tokens, seed 42
    assert {(p["model"], p["temperature"], p["max_completion_tokens"], p["seed"]) for p in picks} \
        == {(LLAMA_70B, 0.0, 2048, 42)}
    assert len(picks) == 2 and all("<features>" in p["messages"][-1]["content"] for p in picks)
    searches = [p for e, p in gf.requests if e == "search"]
    assert [s["perPage"] for s in searches] == ["10", "10"]
    # (6) Auto Steer per query x model: once more for autosteer+prompt in the study's design
    per_model = 2 if name == "paper" else 1
    assert gf.served["autosteer"] == 2 * per_model
    # (5) the judges: once per reply (paper) or three times (corrected); their temperature is
    # checked in the loaded config above (the fake OpenAI server keeps no request bodies)
    repeats = (STUDY if name == "paper" else CORRECTED)["judge"][1]
    assert oa.requests == 2 * repeats * len(generations) == 2 * repeats * summary.generations
