# Reference values for tests/test_stats_raters.py: the generalizability study's variance
# components (steerstats.stats.g_study) fitted by lme4.
# Run from the repository root:  Rscript tests/reference/raters_lme4.R
# Data: tests/reference/raters_data.csv, two simulated judge panels (simulate_panel):
#   "unbalanced": 40 responses x 3 judges x 2 repeats, 10% of ratings unparsed (NA) and one
#                 judge that skipped 8 responses;
#   "two_judges": 30 responses x 2 judges x 3 repeats, no response x judge variance (a
#                 boundary fit is possible).
# Writes tests/reference/raters_lme4.csv. Versions used: R 4, lme4 1.1-31 (Debian).
suppressPackageStartupMessages(library(lme4))
d <- read.csv("tests/reference/raters_data.csv")
d <- d[!is.na(d$value), ]
d$response <- paste(d$key, d$query_id, sep = "|")
out <- NULL
for (ds in unique(d$dataset)) {
  x <- d[d$dataset == ds, ]
  m <- lmer(value ~ 1 + (1 | response) + (1 | rater) + (1 | response:rater), data = x,
            REML = TRUE, control = lmerControl(optimizer = "bobyqa"))
  vc <- as.data.frame(VarCorr(m))
  comp <- c("response:rater" = "response:rater", "response" = "response", "rater" = "rater",
            "Residual" = "residual")[vc$grp]
  out <- rbind(out, data.frame(dataset = ds, component = comp, variance = vc$vcov,
                               reml_criterion = REMLcrit(m), intercept = fixef(m)[[1]],
                               singular = isSingular(m), n = nrow(x)))
}
write.csv(out, "tests/reference/raters_lme4.csv", row.names = FALSE)
print(out, digits = 10)
