"""Power and MDE by simulation: agreement with the noncentral t, the recommended test, the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.power import TTestPower

from steerstats.stats import mde, mixed_model, power, simulate_crossed

VC = {"query": 0.25, "prompt": 0.10, "query:method": 0.03, "residual": 0.55}


def test_simulated_power_agrees_with_the_noncentral_t() -> None:
    table = power(VC, n_queries=[5, 14], n_prompts=[10, 50], n_repeats=[1, 3],
                  effect=[0.0, 0.2, 0.4], n_sims=4000, seed=1)
    assert len(table) == 2 * 2 * 2 * 3
    # Reference for the analytic column: statsmodels' one-sample t-test power on the
    # query-level differences (effect size = effect / sd_diff, nobs = n_queries).
    for _, row in table.iterrows():
        ref = TTestPower().power(effect_size=row["effect"] / row["sd_diff"],
                                 nobs=row["n_queries"], alpha=0.05, alternative="two-sided")
        assert row["power_analytic"] == pytest.approx(ref, abs=1e-6)
        # Monte-Carlo agreement within 4 SE (SE at the analytic value).
        se = np.sqrt(ref * (1 - ref) / row["n_sims"])
        assert abs(row["power"] - ref) < 4 * se + 1e-9
        assert row["ci_low"] <= row["power"] <= row["ci_high"]
    null = table[table["effect"] == 0.0]
    assert null["power"].between(0.05 - 4 * np.sqrt(0.05 * 0.95 / 4000),
                                 0.05 + 4 * np.sqrt(0.05 * 0.95 / 4000)).all()
    # sd of one query's difference: sqrt(2 * 0.03 + 2 * 0.55 / (P * R)).
    row = table.iloc[0]
    cells = row["n_prompts"] * row["n_repeats"]
    assert row["sd_diff"] == pytest.approx(np.sqrt(0.06 + 1.1 / cells))


def test_mde_reaches_the_target_power() -> None:
    table = mde(VC, n_queries=[6, 14], n_prompts=30, power=0.8, n_sims=4000, seed=2)
    for _, row in table.iterrows():
        assert abs(row["mde"] - row["mde_analytic"]) < 4 * row["mc_se"]
        assert row["ci_low"] < row["mde"] < row["ci_high"]
        at = power(VC, int(row["n_queries"]), 30, effect=row["mde"] * 1.0001, n_sims=4000,
                   seed=2 if row["n_queries"] == 6 else 99)
        assert at["power"].iloc[0] == pytest.approx(0.8, abs=4 * np.sqrt(0.16 / 4000))
        analytic = TTestPower().power(effect_size=row["mde_analytic"] / row["sd_diff"],
                                      nobs=row["n_queries"], alpha=0.05)
        assert analytic == pytest.approx(0.8, abs=1e-8)
    # Same seed, same design: the simulated curve just above the MDE reaches the target.
    first = power(VC, 6, 30, effect=float(np.nextafter(table["mde"].iloc[0], 1.0)),
                  n_sims=4000, seed=2)
    assert first["power"].iloc[0] >= 0.8


def test_accepts_the_mixed_model_table_and_matches_its_test() -> None:
    scores = simulate_crossed({"control": 3.0, "steer": 3.3}, n_queries=10, n_topic=0,
                              n_common=8, n_repeats=1, seed=8)
    fit = mixed_model(scores, "behavior")
    from_table = power(fit.variance_components, 10, 8, effect=0.3, n_sims=500, seed=3)
    as_dict = dict(zip(fit.variance_components["group"], fit.variance_components["variance"],
                       strict=True))
    pd.testing.assert_frame_equal(from_table, power(as_dict, 10, 8, effect=0.3, n_sims=500, seed=3))
    # The test power() simulates is the mixed model's contrast test on a balanced design:
    # t = diff / (sd_diff_hat / sqrt(Q)) with Q - 1 df, checked in test_stats_mixed.py; here,
    # the fitted variance components predict the contrast's standard error.
    con = fit.contrasts("control").iloc[0]
    sd_diff = from_table["sd_diff"].iloc[0]
    assert con["se"] == pytest.approx(sd_diff / np.sqrt(10), rel=1e-6)
    assert con["df"] == pytest.approx(9.0, rel=1e-4)


def test_seeded_and_validated() -> None:
    a = power(VC, 8, 20, effect=0.3, n_sims=300, seed=5)
    pd.testing.assert_frame_equal(a, power(VC, 8, 20, effect=0.3, n_sims=300, seed=5))
    with pytest.raises(ValueError, match=r"\['residual'\] missing"):
        power({k: v for k, v in VC.items() if k != "residual"}, 8, 20)
    with pytest.raises(ValueError, match="'prompt' must be a finite number >= 0"):
        power({**VC, "prompt": -1.0}, 8, 20)
    with pytest.raises(ValueError, match="n_queries must be at least 2"):
        power(VC, 1, 20)
    with pytest.raises(ValueError, match="n_prompts must be a positive integer"):
        mde(VC, 8, 0)
    with pytest.raises(ValueError, match="columns 'group' and 'variance'"):
        power(pd.DataFrame({"grp": ["query"], "vcov": [0.1]}), 8, 20)
    with pytest.raises(TypeError, match="DataFrame .* or a dict"):
        power([0.1, 0.2], 8, 20)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="both 0"):
        power({**VC, "query:method": 0.0, "residual": 0.0}, 8, 20)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "steerstats", "power", *args],
                          capture_output=True, text=True, check=False)


def test_cli_power_and_mde(tmp_path: Path) -> None:
    out = _cli("--var-query", "0.25", "--var-prompt", "0.1", "--var-query-method", "0.03",
               "--var-residual", "0.55", "--queries", "8", "--queries", "14", "--prompts", "30",
               "--effect", "0.3", "--n-sims", "2000", "--seed", "1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].split()[:5] == ["n_queries", "n_prompts", "n_repeats", "effect", "power"]
    printed = [float(line.split()[4]) for line in lines[1:]]
    expected = power(VC, [8, 14], 30, effect=0.3, n_sims=2000, seed=1)["power"].tolist()
    assert printed == pytest.approx(expected, abs=5e-5)

    csv = tmp_path / "variance_components.csv"
    pd.DataFrame({"group": list(VC), "variance": list(VC.values())}).to_csv(csv, index=False)
    # In-process (typer's runner) for the rest: one subprocess is enough for the entry point.
    from typer.testing import CliRunner

    from steerstats.cli import app

    res = CliRunner().invoke(app, ["power", "--from", str(csv), "--queries", "14", "--prompts",
                                   "171", "--mde", "--n-sims", "2000"])
    assert res.exit_code == 0, res.output
    header, row = res.output.strip().splitlines()
    assert "mde" in header.split()
    value = float(row.split()[header.split().index("mde")])
    assert value == pytest.approx(mde(VC, 14, 171, n_sims=2000)["mde"].iloc[0], rel=1e-3)


def test_cli_errors() -> None:
    from typer.testing import CliRunner

    from steerstats.cli import app

    runner = CliRunner()

    def text(result) -> str:  # type: ignore[no-untyped-def]
        return " ".join(result.output.replace("│", " ").split())  # rich wraps the message box

    base = ["power", "--var-query", "0.25", "--var-prompt", "0.1", "--var-query-method", "0.03",
            "--var-residual", "0.55", "--prompts", "30"]
    out = runner.invoke(app, ["power", "--var-query", "0.25", "--queries", "8", "--prompts",
                              "30", "--effect", "0.3"])
    assert out.exit_code == 2 and "--var-prompt" in text(out)
    out = runner.invoke(app, [*base, "--queries", "8"])
    assert out.exit_code == 2 and "--effect" in text(out)
    out = runner.invoke(app, [*base, "--queries", "1", "--effect", "0.2"])
    assert out.exit_code == 2 and "n_queries must be at least 2" in text(out)
    out = runner.invoke(app, [*base, "--queries", "8", "--effect", "0.2", "--from", "x.csv"])
    assert out.exit_code == 2 and "not both" in text(out)

