"""Shipped datasets and their loaders: steering queries, open-ended prompts, MMLU, criteria.

Every file here is listed in ``datasets.csv`` with its source and licence (see README.md);
``read_dataset(name)`` loads one as a DataFrame.
"""

import pandas as pd

from steerstats.datasets import _files
from steerstats.datasets import _mmlu as _mmlu_mod
from steerstats.datasets import _queries as _queries_mod
from steerstats.datasets._files import data_digest, dataset_names, reference_text
from steerstats.datasets._mmlu import (
    MMLUQuestion,
    extract_answer,
    format_mmlu,
    load_mmlu_jsonl,
    mmlu_prompts,
    mmlu_template_problem,
    paper_mmlu,
    parse_answer,
    stratified_sample,
)
from steerstats.datasets._queries import (
    common_prompt_texts,
    criteria_text,
    load_queries,
    normalize_text,
    open_prompts,
    paper_topic_prompts,
    slugify,
)

__all__ = [
    "MMLUQuestion",
    "common_prompt_texts",
    "criteria_text",
    "data_digest",
    "dataset_names",
    "extract_answer",
    "format_mmlu",
    "load_mmlu_jsonl",
    "load_queries",
    "mmlu_prompts",
    "mmlu_template_problem",
    "normalize_text",
    "open_prompts",
    "paper_mmlu",
    "paper_topic_prompts",
    "parse_answer",
    "read_dataset",
    "reference_text",
    "slugify",
    "stratified_sample",
]


def read_dataset(name: str) -> pd.DataFrame:
    """Load a shipped dataset as a DataFrame; ``datasets.csv`` lists the names and their sources.

    >>> read_dataset("queries").shape
    (14, 3)
    """
    builders = {
        "queries": _queries_mod.queries_frame,
        "topic_prompts": _queries_mod.topic_prompts_frame,
        "common_prompts": _queries_mod.common_prompts_frame,
        "criteria": _queries_mod.criteria_frame,
        "mmlu_paper": _mmlu_mod.paper_mmlu_frame,
        "reference_text": _files.reference_text_frame,
    }
    if name not in builders:
        raise ValueError(
            f"unknown dataset {name!r}; valid names are: {', '.join(dataset_names())} "
            "(see steerstats/datasets/datasets.csv)"
        )
    return builders[name]()
