"""Crossed mixed model: pinned to R lme4/lmerTest, cross-checked with statsmodels, edge cases."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from steerstats.errors import PrerequisiteError
from steerstats.stats import simulate_crossed
from steerstats.stats.mixed import ConvergenceError, mixed_model

REF = Path(__file__).parent / "reference"


def _reference_scores() -> pd.DataFrame:
    data = pd.read_csv(REF / "mixed_data.csv")
    data["metric"] = "behavior"
    return data


def _boundary_scores() -> pd.DataFrame:
    """Second data set of tests/reference/mixed_lme4.R: no query:method variation at all."""
    d = _reference_scores()
    ctl = d[(d["method"] == "control") & (d["model"] == "llama-8b")].copy()
    prm = ctl.copy()
    prm["method"] = "prompt"
    shifted = ctl["value"].to_numpy() + 0.5
    shifted[0::3] += 0.2
    prm["value"] = shifted
    return pd.concat([ctl, prm], ignore_index=True)


def _has_lme4() -> bool:
    if shutil.which("Rscript") is None:
        return False
    probe = 'quit(status = !all(sapply(c("lme4", "lmerTest", "jsonlite"), requireNamespace)))'
    return subprocess.run(["Rscript", "-e", probe], capture_output=True).returncode == 0


# lme4 1.1-31 + lmerTest 3.1-3 on tests/reference/mixed_data.csv, printed by
# tests/reference/mixed_lme4.R (10 significant digits).
LME4_REML = 1600.004103
LME4_VARCOR = {"query": 0.25287781682, "prompt": 0.10112493446, "query:method": 0.02873211945,
               "residual": 0.55250961237}
LME4_FIXED = pd.DataFrame(
    {
        "estimate": [3.611179215897, 0.533020274570, 0.508636872005, -0.420121966505,
                     -0.004869146518, 0.065948600064],
        "se": [0.23714572463, 0.13407086087, 0.13408393544, 0.09770734201, 0.13919259257,
               0.13956538823],
        "df": [11.94917487, 22.36368675, 22.36745232, 649.37628597, 649.70201648, 649.37332993],
        "p": [3.453728310e-09, 6.239163748e-04, 9.744944016e-04, 1.972172522e-05,
              9.721053469e-01, 6.367084888e-01],
    }
)
# contest(m, c(0,0,1,0,0,1)): steer - control within llama-8b.
LME4_CONTRAST = {"estimate": 0.5745854721, "se": 0.1339156154, "df": 22.23757875,
                 "ci_low": 0.2970334141, "ci_high": 0.85213753, "p": 0.0002906784666}
# contest(m, c(1,0,1,1,0,1)): EMM of (llama-8b, steer).
LME4_EMM = {"estimate": 3.765642721, "se": 0.2375391925, "df": 12.02833427,
            "ci_low": 3.248224465, "ci_high": 4.283060977}


ONE_TERM = ("query", "prompt", "query:method")  # the structure of tests/reference/mixed_lme4.R


def test_numpy_engine_matches_lme4_lmertest() -> None:
    fit = mixed_model(_reference_scores(), "behavior", strength=None, random=ONE_TERM)
    assert fit.reml_criterion == pytest.approx(LME4_REML, rel=1e-8)
    vc = fit.variance_components.set_index("group")["variance"]
    for group, ref in LME4_VARCOR.items():
        assert vc[group] == pytest.approx(ref, rel=1e-3), group  # lme4's bobyqa stops ~1e-5
    assert fit.fixed["term"].tolist() == [
        "(Intercept)", "method[prompt]", "method[steer]", "model[llama-8b]",
        "method[prompt]:model[llama-8b]", "method[steer]:model[llama-8b]",
    ]
    np.testing.assert_allclose(fit.fixed["estimate"], LME4_FIXED["estimate"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fit.fixed["se"], LME4_FIXED["se"], rtol=1e-4)
    np.testing.assert_allclose(fit.fixed["df"], LME4_FIXED["df"], rtol=1e-3)
    np.testing.assert_allclose(fit.fixed["p"], LME4_FIXED["p"], rtol=1e-3)
    con = fit.contrasts("control").set_index(["model", "method"]).loc[("llama-8b", "steer")]
    for col, ref in LME4_CONTRAST.items():
        assert con[col] == pytest.approx(ref, rel=1e-3), col
    emm = fit.emm.set_index(["model", "method"]).loc[("llama-8b", "steer")]
    for col, ref in LME4_EMM.items():
        assert emm[col] == pytest.approx(ref, rel=1e-4), col
    assert emm["n"] == 112
    assert fit.n_obs == 681 and fit.n_missing == 0 and not fit.singular


def test_boundary_fit_matches_lme4() -> None:
    # Second block of tests/reference/mixed_lme4.R: lme4 reports a singular fit with the
    # query:method variance at 0; REMLcrit 560.0844988, Satterthwaite df as below.
    fit = mixed_model(_boundary_scores(), "behavior", strength=None)
    assert fit.singular
    assert fit.reml_criterion == pytest.approx(560.0844988, rel=1e-8)
    vc = fit.variance_components.set_index("group")["variance"]
    assert vc["query:method"] == 0.0
    assert vc["query"] == pytest.approx(0.41673301711, rel=1e-3)
    assert vc["prompt"] == pytest.approx(0.05323685817, rel=1e-3)
    assert vc["residual"] == pytest.approx(0.56486152809, rel=1e-4)
    np.testing.assert_allclose(fit.fixed["estimate"], [3.2002625133, 0.5672413793], rtol=1e-6)
    np.testing.assert_allclose(fit.fixed["se"], [0.26520429295, 0.09868633068], rtol=1e-4)
    np.testing.assert_allclose(fit.fixed["df"], [7.608141928, 215.836203355], rtol=1e-3)


# tests/reference/mixed_design_lme4.R, block 1: two models, so query:model and
# query:model:method terms (lme4: singular, query:model variance 0).
LME4_MULTI = {"reml": 1604.603831, "query": 0.25937802277, "prompt": 0.10027969830,
              "query:model": 0.0, "query:model:method": 0.01934339024,
              "residual": 0.55509673055}
LME4_MULTI_CONTRAST = {"estimate": 0.5723035835, "se": 0.1236990459, "df": 29.82994878,
                       "ci_low": 0.3196160248, "ci_high": 0.8249911423}
# Block 2: tests/reference/mixed_design_data.csv, control replies reused across queries
# (same key), so a generation term is added.
LME4_SHARED = {"reml": 1918.431848, "query": 0.19887883874, "prompt": 0.23214177008,
               "query:model": 0.05319502381, "query:model:method": 0.27319596252,
               "generation": 0.64646497807, "residual": 0.29149023947}
LME4_SHARED_CONTRAST = {"estimate": 1.554992503, "se": 0.3093843906, "df": 38.572129,
                        "ci_low": 0.9289814845, "ci_high": 2.181003523}
LME4_SHARED_EMM = {"estimate": 1.853533574, "se": 0.3006670016, "df": 35.55909878}


def _shared_scores() -> pd.DataFrame:
    return pd.read_csv(REF / "mixed_design_data.csv").assign(metric="behavior")


@pytest.mark.parametrize(
    ("scores", "ref", "contrast", "structure"),
    [
        (_reference_scores, LME4_MULTI, LME4_MULTI_CONTRAST,
         "value ~ method * model + (1 | query) + (1 | prompt) + (1 | query:model) "
         "+ (1 | query:model:method)"),
        (_shared_scores, LME4_SHARED, LME4_SHARED_CONTRAST,
         "value ~ method * model + (1 | query) + (1 | prompt) + (1 | query:model) "
         "+ (1 | query:model:method) + (1 | generation)"),
    ],
)
def test_structure_from_the_design_matches_lme4(scores, ref, contrast, structure) -> None:  # type: ignore[no-untyped-def]
    fit = mixed_model(scores(), "behavior", strength=None)
    assert fit.structure == structure
    assert fit.reml_criterion == pytest.approx(ref["reml"], rel=1e-8)
    vc = fit.variance_components.set_index("group")
    assert list(vc.index) == [k for k in ref if k != "reml"]
    for group, value in ref.items():
        if group != "reml":
            assert vc.loc[group, "variance"] == pytest.approx(value, rel=2e-3, abs=1e-6), group
    # a variance at exactly 0 is a boundary (singular) fit, flagged on the result and the term
    assert fit.singular == bool(ref["query:model"] == 0.0)
    assert vc["at_boundary"].tolist() == [bool(v == 0.0) for k, v in ref.items() if k != "reml"]
    con = fit.contrasts("control").set_index(["model", "method"]).loc[("llama-8b", "steer")]
    for col, value in contrast.items():
        assert con[col] == pytest.approx(value, rel=2e-3), col


def test_shared_generation_emm_matches_lme4() -> None:
    emm = mixed_model(_shared_scores(), "behavior", strength=None).emm
    row = emm.set_index(["model", "method"]).loc[("llama-70b", "control")]
    for col, value in LME4_SHARED_EMM.items():
        assert row[col] == pytest.approx(value, rel=2e-3), col


@pytest.mark.skipif(not _has_lme4(), reason="Rscript with lme4, lmerTest and jsonlite not found")
def test_lme4_engine_fits_the_structure_from_the_design() -> None:
    ours = mixed_model(_shared_scores(), "behavior", strength=None)
    theirs = mixed_model(_shared_scores(), "behavior", strength=None, engine="lme4")
    assert theirs.structure == ours.structure
    assert theirs.reml_criterion == pytest.approx(LME4_SHARED["reml"], rel=1e-9)
    np.testing.assert_allclose(ours.variance_components["variance"],
                               theirs.variance_components["variance"], rtol=2e-3)


def test_roles_keep_the_callers_names_and_model_none_works() -> None:
    d = _reference_scores()
    d = d[d["model"] == "llama-8b"].drop(columns="model").rename(
        columns={"method": "arm", "query_id": "concept", "prompt_id": "item", "metric": "m"})
    fit = mixed_model(d, "behavior", model=None, method="arm", metric="m", strength=None,
                      clusters=("concept", "item"))
    assert fit.structure == "value ~ method + (1 | query) + (1 | prompt) + (1 | query:method)"
    assert fit.emm.columns[0] == "arm" and "model" not in fit.emm
    con = fit.contrasts("control")
    assert "arm" in con and "model" not in con


def test_statsmodels_engine_agrees_with_lme4() -> None:
    fit = mixed_model(_reference_scores(), "behavior", strength=None, engine="statsmodels",
                      random=ONE_TERM)
    vc = fit.variance_components.set_index("group")["variance"]
    for group, ref in LME4_VARCOR.items():
        assert vc[group] == pytest.approx(ref, rel=2e-3, abs=1e-4), group
    np.testing.assert_allclose(fit.fixed["estimate"], LME4_FIXED["estimate"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(fit.fixed["df"], LME4_FIXED["df"], rtol=5e-3)


@pytest.mark.skipif(not _has_lme4(), reason="Rscript with lme4, lmerTest and jsonlite not found")
def test_lme4_engine_returns_the_same_tables() -> None:
    scores = _reference_scores()
    ours = mixed_model(scores, "behavior", strength=None, random=ONE_TERM)
    theirs = mixed_model(scores, "behavior", strength=None, engine="lme4", random=ONE_TERM)
    assert theirs.engine == "lme4"
    assert theirs.reml_criterion == pytest.approx(LME4_REML, rel=1e-9)
    pd.testing.assert_frame_equal(ours.fixed[["term"]], theirs.fixed[["term"]])
    np.testing.assert_allclose(theirs.fixed["df"], LME4_FIXED["df"], rtol=1e-6)
    np.testing.assert_allclose(theirs.fixed["se"], LME4_FIXED["se"], rtol=1e-8)
    for table in ("fixed", "emm", "variance_components"):
        a, b = getattr(ours, table), getattr(theirs, table)
        num = a.select_dtypes("number").columns
        np.testing.assert_allclose(a[num], b[num], rtol=1e-3, atol=1e-6, err_msg=table)
    np.testing.assert_allclose(ours.contrasts()["estimate"], theirs.contrasts()["estimate"],
                               rtol=1e-5)


def test_lme4_engine_without_r_names_the_fix(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PrerequisiteError, match="Rscript.*engine='numpy'"):
        mixed_model(_reference_scores(), "behavior", strength=None, engine="lme4")


def test_convergence_failure_raises() -> None:
    with pytest.raises(ConvergenceError, match="did not converge"):
        mixed_model(_reference_scores(), "behavior", strength=None, maxiter=3)
    with pytest.raises(ConvergenceError, match="statsmodels"):
        mixed_model(_reference_scores(), "behavior", strength=None, engine="statsmodels", maxiter=1)


def test_balanced_two_method_contrast_is_the_paired_query_level_t_test() -> None:
    scores = simulate_crossed({"control": 3.0, "steer": 3.5}, n_queries=9, n_topic=0,
                              n_common=7, n_repeats=1, sd_query_method=0.5, seed=3)
    con = mixed_model(scores, "behavior").contrasts("control").iloc[0]
    wide = scores.pivot_table(index="query_id", columns="method", values="value", aggfunc="mean")
    ref = stats.ttest_1samp(wide["steer"] - wide["control"], 0.0)
    assert con["df"] == pytest.approx(8.0, rel=1e-4)
    assert con["t"] == pytest.approx(ref.statistic, rel=1e-5)
    assert con["p"] == pytest.approx(ref.pvalue, rel=1e-4)
    query_df = mixed_model(scores, "behavior", ddf="query")
    assert (query_df.fixed["df"] == 8.0).all() and (query_df.emm["df"] == 8.0).all()


def test_repeats_are_averaged_and_missing_responses_counted() -> None:
    scores = simulate_crossed(n_queries=6, n_topic=0, n_common=6, n_repeats=3, seed=5)
    averaged = (scores.groupby(["model", "method", "query_id", "prompt_id", "sample", "metric"],
                               as_index=False)["value"].mean())
    a = mixed_model(scores, "behavior", strength=None)
    b = mixed_model(averaged, "behavior", strength=None)
    np.testing.assert_allclose(a.fixed["estimate"], b.fixed["estimate"], rtol=1e-10)
    # One response with every rating unparsed (NaN) is left out and counted, another with one
    # of three ratings missing keeps the mean of the other two.
    first = scores["key"] == scores["key"].iloc[0]
    second = scores.index[scores["key"] == scores["key"].iloc[3]][0]
    scores.loc[first, "value"] = np.nan
    scores.loc[second, "value"] = np.nan
    fit = mixed_model(scores, "behavior")
    assert fit.n_missing == 1 and fit.n_obs == a.n_obs - 1


def test_contrast_options() -> None:
    scores = simulate_crossed(n_queries=5, n_topic=0, n_common=5, n_repeats=1,
                              model={"a": 0.0, "b": 0.0}, seed=4)
    fit = mixed_model(scores, "behavior")
    pairs = fit.contrasts()
    assert len(pairs) == 6  # 3 pairs of methods x 2 models
    assert set(pairs.columns) >= {"model", "method", "baseline", "estimate", "ci_low", "ci_high",
                                  "p", "p_holm"}
    assert (pairs["p_holm"] >= pairs["p"]).all()
    by_model = fit.contrasts("a", factor="model")
    assert by_model[["method", "model", "baseline"]].values.tolist() == [
        ["control", "b", "a"], ["prompt", "b", "a"], ["steer", "b", "a"]]
    emm = fit.emm.set_index(["model", "method"])["estimate"]
    diff = emm[("b", "control")] - emm[("a", "control")]
    assert by_model["estimate"].iloc[0] == pytest.approx(diff)
    with pytest.raises(ValueError, match="baseline 'nope'.*control"):
        fit.contrasts("nope")
    assert fit.fixed["ci_low"].dtype == float and fit.emm["ci_high"].dtype == float


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d[d["query_id"] == "query-00"], "2 levels of query.*'query_id'"),
        (lambda d: d[d["method"] == "control"], "2 levels of method"),
        (lambda d: d[d["prompt_id"] == "common-00"], "2 levels of prompt"),
        (lambda d: d.drop(columns="prompt_id"), "'prompt_id' not found; pass clusters="),
        (lambda d: d.assign(value=np.where(d["method"] == "steer", np.nan, d["value"])),
         "no non-missing values for model='model-a', method='steer'"),
        (lambda d: d.assign(strength=np.where(d["method"] == "steer", d["sample"] + 1.0, np.nan)),
         "2 strengths.*dose_response"),
    ],
)
def test_edge_cases_raise_clear_errors(change, message) -> None:  # type: ignore[no-untyped-def]
    scores = simulate_crossed(n_queries=4, n_topic=0, n_common=4, n_samples=2, n_repeats=1,
                              model="model-a", seed=6)
    with pytest.raises(ValueError, match=message):
        mixed_model(change(scores), "behavior")


def test_bad_arguments() -> None:
    scores = simulate_crossed(n_queries=4, n_topic=0, n_common=4, n_repeats=1, seed=6)
    with pytest.raises(ValueError, match="metric 'coherence' not found.*behavior"):
        mixed_model(scores, "coherence")
    with pytest.raises(ValueError, match="engine"):
        mixed_model(scores, "behavior", engine="sas")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reference 'x'"):
        mixed_model(scores, "behavior", reference="x")
    fit = mixed_model(scores, "behavior", reference="steer")
    assert fit.fixed["term"].tolist() == ["(Intercept)", "method[control]", "method[prompt]"]



def test_contrast_holm_family_is_model_x_baseline_and_a_pair_is_tested_once() -> None:
    scores = simulate_crossed(n_queries=6, n_topic=0, n_common=5, n_repeats=1,
                              model={"a": 0.0, "b": 0.2}, seed=4)
    fit = mixed_model(scores, "behavior")
    both = fit.contrasts(["control", "prompt"])
    assert both[["model", "method", "baseline"]].values.tolist() == [
        ["a", "prompt", "control"], ["a", "steer", "control"], ["a", "steer", "prompt"],
        ["b", "prompt", "control"], ["b", "steer", "control"], ["b", "steer", "prompt"]]
    for _, fam in both.groupby(["model", "baseline"]):
        ref = multipletests(fam["p"].to_numpy(), method="holm")[1]
        np.testing.assert_allclose(fam["p_holm"], ref, rtol=1e-12)


def test_tiny_design_fails_as_a_convergence_error_not_a_linalg_one() -> None:
    """The demo's 2-query pilot (sentiment scores; control replies shared across queries): the
    REML search strayed where the fixed-effect factorisation fails and analyze printed numpy's
    "9-th leading minor ... not positive definite". lme4 does not converge on it either."""
    arms = ["control", "prompt", "caa @ 0.1", "caa @ 0.2", "caa @ 0.3", "random @ 0.1",
            "random @ 0.2", "random @ 0.3", "caa+prompt @ 0.2"]
    values = [0.8555, 0.6369, 0.0, 0.8555, 0.6369, 0.0, 0.8402, 0.4401, 0.5267, 0.8481, 0.6908,
              0.0, 0.5574, 0.6369, 0.0, 0.9196, 0.6996, 0.3818, 0.9231, 0.7814, 0.7096, -0.5267,
              -0.5661, 0.0, 0.4404, 0.438, 0.6986, 0.8442, -0.4215, 0.5835, 0.6369, 0.6597, 0.0,
              0.7003, 0.5106, 0.4939, 0.4404, 0.4404, 0.0, 0.0, -0.4742, 0.0, 0.4404, 0.0, 0.0,
              0.0, 0.0, 0.0, 0.8625, 0.3871, -0.923, 0.4526, 0.7712, 0.3818]
    rows = [(arm, query, prompt) for arm in arms for query in ("q1", "q2")
            for prompt in ("p17", "p72", "p08")]
    data = pd.DataFrame(rows, columns=["method", "query_id", "prompt_id"]).assign(
        model="m", metric="sentiment", sample=0, strength=np.nan, value=values)
    # The pilot's generation keys (their order sets the search's path): one control reply per
    # prompt, reused by both queries.
    data["key"] = (
        "78e454 ac2305 8247be 78e454 ac2305 8247be 335775 c8fec7 a093f3 d7bc06 37f2a8 176289 "
        "f9a9a4 0f9283 149885 b8a902 6b1fbf bd2fca 27ce94 ac2fee ab9ed6 144817 ba3844 daea19 "
        "d6b48d 02315b 7e4a4f bb84b5 736c7f 7bf5bf 2e4a0e 0d7250 bd5fb7 c7e4fb 584cc0 c8114d "
        "01850d 6b9863 02d0d8 f4081b 61fbaf 781500 416c63 eecd59 39f79f 0e9d3b 384e89 8836d7 "
        "5560dd fec83a d320a8 7b5b08 9f6f9b a5843b"
    ).split()
    with pytest.raises(ConvergenceError):
        mixed_model(data, "sentiment")


def test_a_large_fit_stops_at_a_tolerance_above_float_resolution() -> None:
    """benchmarks/stats_speed_mixed.py's 23,940 responses: with an absolute stop of 1e-10 on a
    REML deviance of ~4.8e4 (float resolution there ~1e-11) the simplex ran to its evaluation
    limit and raised ConvergenceError."""
    scores = simulate_crossed(
        {"control": 3.0, "prompt": 3.3, "autosteer": 3.4, "autosteer+prompt": 3.0, "agentic": 3.0},
        n_queries=14, n_topic=0, n_common=171, n_repeats=3,
        model={"llama-8b": 0.0, "llama-70b": 0.0}, sd_query=0.5, sd_prompt=0.3,
        sd_query_method=0.3, sd_response=0.6, sd_repeat=0.4, discrete=True, seed=0,
    )
    scores.loc[np.random.default_rng(0).random(len(scores)) < 0.01, "value"] = np.nan
    fit = mixed_model(scores, "behavior")
    assert fit.n_obs == 23_940 and fit.reml_criterion > 4e4
