"""The report's methods appendix: each estimator in one line, with its formula."""

from __future__ import annotations

from steerstats.reporting.content import Section, Text
from steerstats.reporting.data import ReportData

__all__ = ["ESTIMATORS", "methods_appendix"]

ESTIMATORS: tuple[tuple[str, str], ...] = (
    ("Response score",
     "$\\bar y_{r} = \\frac{1}{k}\\sum_{j=1}^{k} y_{rj}$, the mean of a response's $k$ parsed "
     "judgings; unparsed judgings are excluded and counted."),
    ("Mean and interval",
     "$\\hat\\mu = \\frac{1}{n}\\sum_r \\bar y_r$; the interval is "
     "$\\hat\\mu \\pm t_{G-1}\\sqrt{G/(G-1)}\\,\\mathrm{SD}(\\hat\\mu^{*})$ over bootstrap "
     "replicates $\\hat\\mu^{*}$ that resample queries and prompts independently "
     "(pigeonhole bootstrap), $G$ the smaller number of queries or prompts."),
    ("Paired contrast",
     "$\\hat\\Delta = \\frac{1}{m}\\sum_{c}(\\bar y_{c}^{\\,\\mathrm{method}} - "
     "\\bar y_{c}^{\\,\\mathrm{base}})$ over the $m$ query-prompt cells both arms share, with "
     "the same bootstrap for its interval and $t = \\hat\\Delta/\\mathrm{SE}$ on $G-1$ df; "
     "Holm's step-down adjustment within each family (one model x metric x baseline: the arms "
     "and strengths compared with that baseline); $d_z = \\hat\\Delta/s_{\\Delta}$."),
    ("Mixed model",
     "$y = X\\beta + u_{q} + u_{p} + u_{qm} + \\varepsilon$ with independent normal random "
     "intercepts for query, prompt and query-by-method, fitted by REML; marginal means "
     "$L\\hat\\beta$ with Satterthwaite degrees of freedom."),
    ("Accuracy",
     "$\\mathrm{logit}\\,P(\\mathrm{correct}) = \\beta_{\\mathrm{model}\\times\\mathrm{method}}$ "
     "by GEE with an exchangeable working correlation within question and robust standard "
     "errors."),
    ("Reliability",
     "$\\mathrm{ICC}(2,1) = \\frac{MS_R - MS_E}{MS_R + (k-1)MS_E + k(MS_C - MS_E)/n}$ "
     "(Shrout and Fleiss); Krippendorff's $\\alpha = 1 - D_o/D_e$ with ordinal distances."),
    ("Judges",
     "REML variance components of $y = \\mu + u_p + u_r + u_{pr} + \\varepsilon$ (response "
     "$p$, judge $r$, repeats within); for $n_r$ judges x $n_k$ repeats "
     "$G = \\sigma^2_p / (\\sigma^2_p + \\sigma^2_{pr}/n_r + \\sigma^2_\\varepsilon/(n_r n_k))$ "
     "and $\\Phi$ adds $\\sigma^2_r/n_r$ to the error (Brennan 2001); a judge's offset is its "
     "mean minus the panel's on the responses all judges rated; Bland-Altman limits "
     "$\\bar d \\pm 1.96\\,s_d$."),
    ("Trade-off",
     "gains and losses $\\hat\\Delta$ against the baseline from one joint bootstrap; a method "
     "is Pareto-optimal when no other has higher gain and no higher cost."),
    ("Dose-response",
     "per query, the least-squares slope $\\hat b$ of the response score on strength, with a "
     "t interval from prompt-clustered (CR1) standard errors; anti-steerable when the "
     "behaviour slope is negative with Holm-adjusted $p < \\alpha$ across queries; the spread "
     "of slopes across queries from a DerSimonian-Laird random-effects model."),
    ("Power",
     "the smallest $\\Delta$ for which the share of simulated designs (from the fitted variance "
     "components) with $p < \\alpha$ reaches the target power."),
)


def methods_appendix(data: ReportData) -> Section:
    """Each estimator in one line."""
    del data
    lines = [f"- **{name}.** {line}" for name, line in ESTIMATORS]
    return Section("methods", "Methods appendix", [Text("\n".join(lines))])

