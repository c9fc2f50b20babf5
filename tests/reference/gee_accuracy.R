# Reference values for tests/test_stats_accuracy.py: binomial GEE, exchangeable working
# correlation, clustered by question, one logit per model x method (cell means).
# Data: gee_accuracy.csv (written once from steerstats.stats.example_scores(seed=3,
# n_queries=6, n_mmlu=30), accuracy rows; NaN = unparsed answer, dropped here as in
# accuracy_model). Run: Rscript tests/reference/gee_accuracy.R  (R 4, geepack 1.3)
library(geepack)
d <- read.csv("tests/reference/gee_accuracy.csv")
d <- d[!is.na(d$value), ]
d <- d[order(d$prompt_id), ]          # geepack needs each cluster's rows contiguous
d$group <- factor(paste(d$model, d$method, sep = ":"))
d$id <- as.integer(factor(d$prompt_id))
fit <- geeglm(value ~ 0 + group, family = binomial, id = id, data = d,
              corstr = "exchangeable")
s <- summary(fit)$coefficients
options(digits = 10)
print(packageVersion("geepack"))
print(data.frame(group = levels(d$group), estimate = s[, "Estimate"], se = s[, "Std.err"],
                 prob = plogis(s[, "Estimate"]),
                 low = plogis(s[, "Estimate"] - qnorm(0.975) * s[, "Std.err"]),
                 high = plogis(s[, "Estimate"] + qnorm(0.975) * s[, "Std.err"])),
      row.names = FALSE)
print(summary(fit)$corr)
print(table(d$group))
