# Reference ICCs from all ratings for tests/test_stats_reliability.py: psych's
# ICC(x, missing = FALSE, lmer = TRUE) (REML variance components via lme4) on
# tests/reference/icc_missing.csv: 20 targets x 3 occasions, 8 ratings missing.
# Run from the repository root:  Rscript tests/reference/icc_psych_lmer.R
# Versions: R 4.2.2, psych 2.2.9, lme4 1.1-31 (Debian bookworm).
suppressPackageStartupMessages(library(psych))
x <- read.csv("tests/reference/icc_missing.csv")
r <- ICC(x, missing = FALSE, lmer = TRUE)
options(digits = 12)
print(r$results[, c("type", "ICC", "lower bound", "upper bound")])
