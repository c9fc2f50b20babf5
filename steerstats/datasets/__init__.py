"""Shipped datasets and their loaders: steering queries, open-ended prompts, MMLU, criteria.

Every file here is listed in ``datasets.csv`` with its source and licence (see README.md);
``read_dataset(name)`` loads one as a DataFrame.
"""

from steerstats.datasets._files import data_digest, dataset_names, read_dataset, reference_text
from steerstats.datasets._mmlu import (
    MMLUQuestion,
    extract_answer,
    format_mmlu,
    load_mmlu_jsonl,
    mmlu_prompts,
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
