# Reference values for tests/test_stats_mixed.py: the crossed mixed model fitted by lme4/lmerTest.
# Run from the repository root:  Rscript tests/reference/mixed_lme4.R
# Data: tests/reference/mixed_data.csv (simulated, unbalanced: 10% of responses dropped).
# Versions used for the numbers in the test: R 4, lme4 1.1-31 (Debian), lmerTest 3.1-3.
suppressPackageStartupMessages({library(lme4); library(lmerTest)})
d <- read.csv("tests/reference/mixed_data.csv")
d$method <- factor(d$method, levels = c("control", "prompt", "steer"))
d$model <- factor(d$model, levels = c("llama-70b", "llama-8b"))
d$query_method <- paste(d$query_id, d$method, sep = ":")
m <- lmer(value ~ method * model + (1 | query_id) + (1 | prompt_id) + (1 | query_method),
          data = d, REML = TRUE)
options(digits = 10)
cat("REMLcrit\n"); print(REMLcrit(m))
cat("VarCorr\n"); print(as.data.frame(VarCorr(m))[, c("grp", "vcov")])
cat("fixed (lmerTest Satterthwaite)\n"); print(coef(summary(m)))
# Contrast steer - control within llama-8b; EMM of (llama-8b, steer).
# Columns: (Intercept), methodprompt, methodsteer, modelllama-8b, methodprompt:modelllama-8b,
#          methodsteer:modelllama-8b
L_con <- c(0, 0, 1, 0, 0, 1)
L_emm <- c(1, 0, 1, 1, 0, 1)
cat("contrast steer-control | llama-8b\n"); print(contest(m, L_con, joint = FALSE))
cat("emm llama-8b steer\n"); print(contest(m, L_emm, joint = FALSE))

# A boundary fit: no query:method variation in the data (responses for method 'prompt' are
# the control responses shifted by 0.5), so lme4 estimates that variance at exactly 0.
d2 <- d[d$method != "steer", ]
d2 <- d2[d2$model == "llama-8b", ]
ctl <- d2[d2$method == "control", ]
prm <- ctl; prm$method <- "prompt"; prm$value <- ctl$value + 0.5
prm$value[seq(1, nrow(prm), by = 3)] <- prm$value[seq(1, nrow(prm), by = 3)] + 0.2
d2 <- rbind(ctl, prm)
d2$method <- factor(d2$method, levels = c("control", "prompt"))
d2$query_method <- paste(d2$query_id, d2$method, sep = ":")
m2 <- lmer(value ~ method + (1 | query_id) + (1 | prompt_id) + (1 | query_method),
           data = d2, REML = TRUE)
cat("boundary fit: isSingular =", isSingular(m2), "\n")
cat("REMLcrit\n"); print(REMLcrit(m2))
cat("VarCorr\n"); print(as.data.frame(VarCorr(m2))[, c("grp", "vcov")])
cat("fixed (lmerTest Satterthwaite)\n"); print(coef(summary(m2)))
