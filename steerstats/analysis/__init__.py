"""The analysis of a results directory: every statistic that applies (``analyze``), what was
collected (``describe``), means and n without inference (``summary``), and their printout.

It reads results through :mod:`steerstats.results` and the public :mod:`steerstats.stats`
API only; it never imports the collection layer.
"""

from steerstats.analysis.analyze import TABLES, analyze, analyze_results, read_tidy, write_tables
from steerstats.analysis.summary import summary_table

__all__ = ["TABLES", "analyze", "analyze_results", "read_tidy", "summary_table", "write_tables"]
