# Reference ICCs for tests/test_stats_reliability.py, computed in base R from the formulas of
# Shrout & Fleiss (1979) (ICC and F-based intervals; average-measure intervals and the ICC(2,1)
# interval's Satterthwaite df as in McGraw & Wong 1996) on S&F's Table 2 data: 6 targets x 4 judges.
# Run:  Rscript tests/reference/icc_shrout_fleiss.R
Y <- matrix(c(9, 2, 5, 8,
              6, 1, 3, 2,
              8, 4, 6, 8,
              7, 1, 2, 6,
              10, 5, 6, 9,
              6, 2, 4, 7), nrow = 6, byrow = TRUE)
n <- nrow(Y); k <- ncol(Y); gm <- mean(Y)
BMS <- k * sum((rowMeans(Y) - gm)^2) / (n - 1)
JMS <- n * sum((colMeans(Y) - gm)^2) / (k - 1)
WMS <- sum((Y - rowMeans(Y))^2) / (n * (k - 1))
EMS <- (sum((Y - gm)^2) - (n - 1) * BMS - (k - 1) * JMS) / ((n - 1) * (k - 1))
icc1 <- (BMS - WMS) / (BMS + (k - 1) * WMS)
icc2 <- (BMS - EMS) / (BMS + (k - 1) * EMS + k * (JMS - EMS) / n)
icc3 <- (BMS - EMS) / (BMS + (k - 1) * EMS)
icc1k <- (BMS - WMS) / BMS
icc2k <- (BMS - EMS) / (BMS + (JMS - EMS) / n)
icc3k <- (BMS - EMS) / BMS
a <- 0.05
F1 <- BMS / WMS; FL1 <- F1 / qf(1 - a / 2, n - 1, n * (k - 1)); FU1 <- F1 * qf(1 - a / 2, n * (k - 1), n - 1)
F3 <- BMS / EMS; FL3 <- F3 / qf(1 - a / 2, n - 1, (n - 1) * (k - 1)); FU3 <- F3 * qf(1 - a / 2, (n - 1) * (k - 1), n - 1)
aa <- k * icc2 / (n * (1 - icc2)); bb <- 1 + k * icc2 * (n - 1) / (n * (1 - icc2))
v <- (aa * JMS + bb * EMS)^2 / ((aa * JMS)^2 / (k - 1) + (bb * EMS)^2 / ((n - 1) * (k - 1)))
Fs <- qf(1 - a / 2, n - 1, v); Fs2 <- qf(1 - a / 2, v, n - 1)
L2 <- n * (BMS - Fs * EMS) / (Fs * (k * JMS + (k * n - k - n) * EMS) + n * BMS)
U2 <- n * (Fs2 * BMS - EMS) / (k * JMS + (k * n - k - n) * EMS + n * Fs2 * BMS)
out <- data.frame(
  statistic = c("ICC1", "ICC2", "ICC3", "ICC1k", "ICC2k", "ICC3k"),
  estimate = c(icc1, icc2, icc3, icc1k, icc2k, icc3k),
  ci_low = c((FL1 - 1) / (FL1 + k - 1), L2, (FL3 - 1) / (FL3 + k - 1), 1 - 1 / FL1,
             k * L2 / (1 + (k - 1) * L2), 1 - 1 / FL3),
  ci_high = c((FU1 - 1) / (FU1 + k - 1), U2, (FU3 - 1) / (FU3 + k - 1), 1 - 1 / FU1,
              k * U2 / (1 + (k - 1) * U2), 1 - 1 / FU3))
cat(sprintf("BMS %.6f WMS %.6f JMS %.6f EMS %.6f\n", BMS, WMS, JMS, EMS))
print(format(out, digits = 12))
