"""Design of ``mixed_model``: which random-intercept terms to fit, and the matrices they give.

A term is a grouping of the response-level rows (``TERMS``); a method-specific term
``"query:method[steer]"`` is that grouping restricted to one method's rows, so each method has
its own query x method variance (lme4: ``(0 + dummy(method, "steer") | query:method)``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

# Random-intercept terms mixed_model can fit; each is a grouping of the response-level rows by
# the listed roles (a generation is one reply, possibly reused across queries).
TERMS: dict[str, tuple[str, ...]] = {
    "query": ("query",),
    "prompt": ("prompt",),
    "query:method": ("query", "method"),
    "query:model": ("query", "model"),
    "query:model:method": ("query", "model", "method"),
    "generation": ("generation",),
}
# Terms that heteroscedastic=True splits into one term per method.
BY_METHOD = ("query:method", "query:model:method")


@dataclass
class _Design:
    y: np.ndarray
    X: np.ndarray
    terms: list[str]
    Z: sparse.csr_matrix
    groups: list[str]  # random-effect terms, in the order of their columns in Z
    sizes: list[int]  # levels per random-effect term
    method_levels: list[str]
    model_levels: list[str]
    n_queries: int

    def __post_init__(self) -> None:
        self.n, self.p = self.X.shape
        zt = self.Z.T.tocsr()
        self.XtX = self.X.T @ self.X
        self.ZtX = np.asarray(zt @ self.X)
        # Sparse: a generation term can have as many levels as there are responses.
        self.ZtZ = (zt @ self.Z).tocsr()
        self.Xty = self.X.T @ self.y
        self.Zty = np.asarray(zt @ self.y).ravel()
        self.yty = float(self.y @ self.y)

    def cell_vector(self, model: str, method: str) -> np.ndarray:
        """Row of X for a (model, method) cell: its mean is ``cell_vector @ beta``."""
        vec = np.zeros(self.p)
        vec[0] = 1.0
        k = self.method_levels.index(method)
        j = self.model_levels.index(model)
        n_m = len(self.method_levels) - 1
        if k > 0:
            vec[k] = 1.0
        if j > 0:
            vec[n_m + j] = 1.0
        if k > 0 and j > 0:
            n_d = len(self.model_levels) - 1
            vec[1 + n_m + n_d + (j - 1) * n_m + (k - 1)] = 1.0
        return vec


def split_term(term: str) -> tuple[str, str | None]:
    """``"query:method[steer]"`` -> ``("query:method", "steer")``; a plain term -> (term, None)."""
    match = re.fullmatch(r"(.+)\[(.+)\]", term)
    return (match.group(1), match.group(2)) if match else (term, None)


def term_codes(data: pd.DataFrame, term: str) -> np.ndarray:
    """Level code of each row for ``term``; -1 for rows outside a method-specific term."""
    base, level = split_term(term)
    codes = data.groupby(list(TERMS[base]), sort=True).ngroup().to_numpy()
    if level is not None:
        codes = np.where(data["method"].to_numpy() == level, codes, -1)
    return codes


def term_column(term: str) -> str:
    """Column of the response-level frame holding a term's level codes (also R's name)."""
    return "g_" + re.sub(r"\W", "_", term)


def formula_term(term: str) -> str:
    """The term as it reads in an lme4 formula."""
    base, level = split_term(term)
    return f"(1 | {base})" if level is None else f'(0 + dummy(method, "{level}") | {base})'


def r_term(term: str) -> str:
    """The term in the formula the lme4 engine fits (grouping by its code column)."""
    base, level = split_term(term)
    col = term_column(term)
    return f"(1 | {col})" if level is None else f'(0 + dummy(method, "{level}") | {col})'


def build_design(
    data: pd.DataFrame, method_levels: list[str], model_levels: list[str], groups: list[str]
) -> _Design:
    n = len(data)
    n_m, n_d = len(method_levels), len(model_levels)
    m_idx = pd.Categorical(data["method"], categories=method_levels).codes
    d_idx = pd.Categorical(data["model"], categories=model_levels).codes
    m_dum = np.zeros((n, n_m - 1))
    d_dum = np.zeros((n, n_d - 1))
    rows = np.arange(n)
    m_dum[rows[m_idx > 0], m_idx[m_idx > 0] - 1] = 1.0
    d_dum[rows[d_idx > 0], d_idx[d_idx > 0] - 1] = 1.0
    # R's model.matrix order for method * model: method varies fastest inside each model column.
    inter = (d_dum[:, :, None] * m_dum[:, None, :]).reshape(n, -1)
    X = np.hstack([np.ones((n, 1)), m_dum, d_dum, inter])
    terms = ["(Intercept)"] + [f"method[{m}]" for m in method_levels[1:]]
    terms += [f"model[{d}]" for d in model_levels[1:]]
    terms += [f"method[{m}]:model[{d}]" for d in model_levels[1:] for m in method_levels[1:]]
    blocks = []
    sizes = []
    for term in groups:
        raw = data[term_column(term)].to_numpy()
        inside = raw >= 0  # a method-specific term has no level for other methods' rows
        codes, uniques = pd.factorize(raw[inside], sort=True)
        blocks.append(sparse.csr_matrix((np.ones(len(codes)), (rows[inside], codes)),
                                        shape=(n, len(uniques))))
        sizes.append(len(uniques))
    return _Design(
        y=data["value"].to_numpy(dtype=float),
        X=X,
        terms=terms,
        Z=sparse.hstack(blocks).tocsr(),
        groups=list(groups),
        sizes=sizes,
        method_levels=method_levels,
        model_levels=model_levels,
        n_queries=int(data["query"].nunique()),
    )


def random_terms(random: str | Sequence[str], data: pd.DataFrame, n_models: int,
                 heteroscedastic: bool = False,
                 method_levels: Sequence[str] = ()) -> list[str]:
    """The random-intercept terms: named by the caller, or chosen from the design; with
    ``heteroscedastic`` each query x method term is split into one term per method."""
    if isinstance(random, str) and random != "auto":
        random = [random]
    if not isinstance(random, str):
        terms = list(random)
        unknown = [t for t in terms if t not in TERMS]
        if unknown or not terms:
            raise ValueError(f"random terms must be among {list(TERMS)} (or 'auto'), got {terms}")
        if "generation" in terms and "generation" not in data:
            raise ValueError("random term 'generation' needs a generation column (generation=)")
    else:
        terms = ["query", "prompt"]
        terms += ["query:model", "query:model:method"] if n_models > 1 else ["query:method"]
        if "generation" in data and shared_generations(data):
            terms.append("generation")
    if not heteroscedastic:
        return terms
    if not any(t in BY_METHOD for t in terms):
        raise ValueError(
            f"heteroscedastic=True splits a query x method term by method, but the random terms "
            f"{terms} have none: add 'query:method' (one model) or 'query:model:method'")
    return [split for t in terms
            for split in ([f"{t}[{m}]" for m in method_levels] if t in BY_METHOD else [t])]


def shared_generations(data: pd.DataFrame) -> bool:
    """True when some generation is scored for more than one query (a reused reply)."""
    return bool((data.groupby("generation")["query"].nunique() > 1).any())
