"""mixed_model(heteroscedastic=True): one query x method variance per method, pinned to lme4.

Reference values: tests/reference/mixed_hetero_lme4.R (lme4 1.1-31, lmerTest 3.1-3) on
tests/reference/mixed_hetero_data.csv, written to tests/reference/mixed_hetero_lme4.csv.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from steerstats.stats import mixed_model

REF = Path(__file__).parent / "reference"
METHODS = ("control", "prompt", "steer")


def _scores(one_model: bool) -> pd.DataFrame:
    data = pd.read_csv(REF / "mixed_hetero_data.csv").assign(metric="behavior")
    return data[data["model"] == "llama-8b"].drop(columns="model") if one_model else data


def _reference(fit: str) -> pd.DataFrame:
    ref = pd.read_csv(REF / "mixed_hetero_lme4.csv", keep_default_na=False)
    ref = ref[ref["fit"] == fit]
    return ref.assign(value=ref["value"].astype(float)).set_index(["quantity", "name"])["value"]


def _has_lme4() -> bool:
    if shutil.which("Rscript") is None:
        return False
    probe = 'quit(status = !all(sapply(c("lme4", "lmerTest", "jsonlite"), requireNamespace)))'
    return subprocess.run(["Rscript", "-e", probe], capture_output=True).returncode == 0


@pytest.mark.parametrize("one_model", [True, False], ids=["one_model", "two_models"])
def test_method_specific_variances_match_lme4(one_model: bool) -> None:
    ref = _reference("one_model" if one_model else "two_models")
    fit = mixed_model(_scores(one_model), "behavior", strength=None,
                      model=None if one_model else "model", heteroscedastic=True)
    base = "query:method" if one_model else "query:model:method"
    dummies = " + ".join(f'(0 + dummy(method, "{m}") | {base})' for m in METHODS)
    assert fit.structure == (
        "value ~ method + (1 | query) + (1 | prompt) + " + dummies if one_model else
        "value ~ method * model + (1 | query) + (1 | prompt) + (1 | query:model) + " + dummies)
    assert fit.reml_criterion == pytest.approx(ref[("reml", "")], rel=1e-8)
    assert fit.singular == bool(ref[("singular", "")])
    vc = fit.variance_components.set_index("group")
    expected = ref["variance"]
    assert sorted(vc.index) == sorted(expected.index)
    for group, value in expected.items():
        assert vc.loc[group, "variance"] == pytest.approx(value, rel=2e-3), group
    n_levels = 12 if one_model else 24  # queries (x models) per method
    assert (vc.loc[[f"{base}[{m}]" for m in METHODS], "n_levels"] == n_levels).all()

    emm = fit.emm.set_index(["method"] if one_model else ["model", "method"])
    con = fit.contrasts("control").set_index(["method"] if one_model else ["model", "method"])
    for (quantity, name), value in ref.items():
        kind, *where = name.split("/")
        if kind not in ("emm", "contrast"):
            continue
        *model, cell = where
        key = (*model, cell.split("-")[0]) if not one_model else cell.split("-")[0]
        row = emm.loc[key] if kind == "emm" else con.loc[key]
        tol = 1e-5 if quantity == "estimate" else 2e-3
        assert row[quantity] == pytest.approx(value, rel=tol), (quantity, name)


def test_heteroscedastic_widens_the_variable_method_only() -> None:
    # steer's query-specific effects vary most (simulated SD 0.8 vs 0.15 for control): its
    # contrast is wider than with one pooled variance, prompt's narrower.
    data = _scores(one_model=False)
    pooled = mixed_model(data, "behavior", strength=None).contrasts("control")
    split = mixed_model(data, "behavior", strength=None, heteroscedastic=True).contrasts("control")
    ratio = (split["se"] / pooled["se"]).to_numpy()
    steer = (split["method"] == "steer").to_numpy()
    assert (ratio[steer] > 1.1).all() and (ratio[~steer] < 0.9).all()
    np.testing.assert_allclose(split["estimate"], pooled["estimate"], atol=0.02)


def test_heteroscedastic_needs_a_query_method_term() -> None:
    with pytest.raises(ValueError, match="heteroscedastic=True splits a query x method term"):
        mixed_model(_scores(one_model=True), "behavior", strength=None, model=None,
                    random=("query", "prompt"), heteroscedastic=True)


@pytest.mark.skipif(not _has_lme4(), reason="Rscript with lme4, lmerTest and jsonlite not found")
def test_lme4_engine_fits_the_method_specific_structure() -> None:
    ref = _reference("two_models")
    theirs = mixed_model(_scores(one_model=False), "behavior", strength=None,
                         heteroscedastic=True, engine="lme4")
    assert theirs.reml_criterion == pytest.approx(ref[("reml", "")], rel=1e-9)
    vc = theirs.variance_components.set_index("group")["variance"]
    for group, value in ref["variance"].items():
        assert vc[group] == pytest.approx(value, rel=2e-3), group  # bobyqa stops ~1e-4
    con = theirs.contrasts("control").set_index(["model", "method"])
    assert con.loc[("llama-8b", "steer"), "df"] == pytest.approx(
        ref[("df", "contrast/llama-8b/steer-control")], rel=2e-3)
