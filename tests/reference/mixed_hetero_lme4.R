# Reference values for tests/test_stats_mixed_hetero.py: mixed_model(heteroscedastic=True),
# method-specific query x method variances, fitted by lme4/lmerTest on
# tests/reference/mixed_hetero_data.csv. Writes tests/reference/mixed_hetero_lme4.csv.
# Run from the repository root:  Rscript tests/reference/mixed_hetero_lme4.R
# Versions: R 4.2.2, lme4 1.1-31, lmerTest 3.1-3 (Debian bookworm).
suppressPackageStartupMessages({library(lme4); library(lmerTest)})
d <- read.csv("tests/reference/mixed_hetero_data.csv")
d$method <- factor(d$method, levels = c("control", "prompt", "steer"))
d$model <- factor(d$model, levels = c("llama-70b", "llama-8b"))
out <- list()
add <- function(fit, quantity, name, value) {
  out[[length(out) + 1]] <<- data.frame(fit = fit, quantity = quantity, name = name,
                                         value = sprintf("%.12g", value))
}
record <- function(label, m, contrasts) {
  add(label, "reml", "", REMLcrit(m))
  add(label, "singular", "", as.numeric(isSingular(m)))
  vc <- as.data.frame(VarCorr(m))
  # method-specific terms: grp "query_id:method" (".1", ".2" for repeats), var1 dummy(...)
  lvl <- sub('.*"(.*)".*', "\\1", vc$var1)
  grp <- gsub(".", ":", sub("\\.[0-9]+$", "", vc$grp), fixed = TRUE)
  grp <- gsub("query_id", "query", gsub("prompt_id", "prompt", grp))
  grp <- ifelse(grp == "Residual", "residual", grp)
  name <- ifelse(is.na(vc$var1) | vc$var1 == "(Intercept)", grp, paste0(grp, "[", lvl, "]"))
  for (i in seq_len(nrow(vc))) add(label, "variance", name[i], vc$vcov[i])
  for (k in names(contrasts)) {
    ct <- contest(m, contrasts[[k]], joint = FALSE)
    add(label, "estimate", k, ct$Estimate)
    add(label, "se", k, ct$`Std. Error`)
    add(label, "df", k, ct$df)
  }
}

# 1. One model (llama-8b): value ~ method + (1|query) + (1|prompt) + one query:method
#    variance per method.
one <- droplevels(d[d$model == "llama-8b", ])
m1 <- lmer(value ~ method + (1 | query_id) + (1 | prompt_id)
           + (0 + dummy(method, "control") | query_id:method)
           + (0 + dummy(method, "prompt") | query_id:method)
           + (0 + dummy(method, "steer") | query_id:method), data = one, REML = TRUE)
record("one_model", m1, list(
  "emm/control" = c(1, 0, 0), "emm/prompt" = c(1, 1, 0), "emm/steer" = c(1, 0, 1),
  "contrast/prompt-control" = c(0, 1, 0), "contrast/steer-control" = c(0, 0, 1)))
m1p <- lmer(value ~ method + (1 | query_id) + (1 | prompt_id) + (1 | query_id:method),
            data = one, REML = TRUE)
add("one_model", "lrt_chisq", "pooled vs per-method", anova(m1p, m1, refit = FALSE)$Chisq[2])

# 2. Two models: query:model and query:model:method, the latter one variance per method.
m2 <- lmer(value ~ method * model + (1 | query_id) + (1 | prompt_id) + (1 | query_id:model)
           + (0 + dummy(method, "control") | query_id:model:method)
           + (0 + dummy(method, "prompt") | query_id:model:method)
           + (0 + dummy(method, "steer") | query_id:model:method), data = d, REML = TRUE)
record("two_models", m2, list(
  "emm/llama-70b/control" = c(1, 0, 0, 0, 0, 0), "emm/llama-8b/steer" = c(1, 0, 1, 1, 0, 1),
  "contrast/llama-70b/prompt-control" = c(0, 1, 0, 0, 0, 0),
  "contrast/llama-70b/steer-control" = c(0, 0, 1, 0, 0, 0),
  "contrast/llama-8b/prompt-control" = c(0, 1, 0, 0, 1, 0),
  "contrast/llama-8b/steer-control" = c(0, 0, 1, 0, 0, 1)))
write.csv(do.call(rbind, out), "tests/reference/mixed_hetero_lme4.csv", row.names = FALSE,
          quote = TRUE)
