# Reference values for tests/test_stats_mixed.py: the random-effects structures mixed_model
# chooses from the design, fitted by lme4/lmerTest.
# Run from the repository root:  Rscript tests/reference/mixed_design_lme4.R
# Versions: R 4.2.2, lme4 1.1-31, lmerTest 3.1-3 (Debian bookworm).
suppressPackageStartupMessages({library(lme4); library(lmerTest)})
options(digits = 10)
show <- function(m) {
  cat("REMLcrit\n"); print(REMLcrit(m))
  cat("isSingular\n"); print(isSingular(m))
  cat("VarCorr\n"); print(as.data.frame(VarCorr(m))[, c("grp", "vcov")])
  cat("fixed (lmerTest Satterthwaite)\n"); print(coef(summary(m)))
}

# 1. Several models: query x model and query x model x method terms
#    (tests/reference/mixed_data.csv, two models, unbalanced).
d <- read.csv("tests/reference/mixed_data.csv")
d$method <- factor(d$method, levels = c("control", "prompt", "steer"))
d$model <- factor(d$model, levels = c("llama-70b", "llama-8b"))
m1 <- lmer(value ~ method * model + (1 | query_id) + (1 | prompt_id) + (1 | query_id:model)
           + (1 | query_id:model:method), data = d, REML = TRUE)
cat("== multi-model\n"); show(m1)
# steer - control within llama-8b
cat("contrast steer-control | llama-8b\n"); print(contest(m1, c(0, 0, 1, 0, 0, 1), joint = FALSE))
m0 <- lmer(value ~ method * model + (1 | query_id) + (1 | prompt_id)
           + (1 | query_id:method), data = d, REML = TRUE)
cat("LRT against one query:method term\n"); print(anova(m0, m1, refit = FALSE))

# 2. Shared control generations: one control reply per (model, common prompt, sample) reused
#    for every query (tests/reference/mixed_design_data.csv, key = generation).
e <- read.csv("tests/reference/mixed_design_data.csv")
e$method <- factor(e$method, levels = c("control", "prompt", "steer"))
e$model <- factor(e$model, levels = c("llama-70b", "llama-8b"))
e$resp <- paste(e$model, e$method, e$query_id, e$prompt_id, e$sample)
m2 <- lmer(value ~ method * model + (1 | query_id) + (1 | prompt_id) + (1 | query_id:model)
           + (1 | query_id:model:method) + (1 | key), data = e, REML = TRUE)
cat("== shared generations\n"); show(m2)
cat("contrast steer-control | llama-8b\n"); print(contest(m2, c(0, 0, 1, 0, 0, 1), joint = FALSE))
cat("emm llama-70b control\n"); print(contest(m2, c(1, 0, 0, 0, 0, 0), joint = FALSE))
