# Type III F tests (lmerTest anova(type = 3), Satterthwaite and Kenward-Roger), per-coefficient
# Satterthwaite/KR tables, Nakagawa R2 and ICC (performance) for tests/reference_inference.
# Usage (from this folder): Rscript make_inference_refs.R cases.tsv /work/shared/data anova.json
# Data sets are read from DATA_DIR, or from this folder (students_p1.csv: students, province P1).
suppressPackageStartupMessages({library(lmerTest); library(jsonlite); library(performance)})
a <- commandArgs(TRUE)
cases <- read.delim(a[1], stringsAsFactors = FALSE, quote = "")
res <- list()
tab <- function(x) lapply(seq_len(nrow(x)), function(j) list(term = rownames(x)[j], num_df = x[j, "NumDF"],
  den_df = x[j, "DenDF"], F = x[j, "F value"], p_value = x[j, "Pr(>F)"]))
coefs <- function(co) lapply(seq_len(nrow(co)), function(j) list(term = rownames(co)[j], estimate = co[j, 1],
  std_error = co[j, 2], df = co[j, 3], p_value = co[j, 5]))
for (i in seq_len(nrow(cases))) {
  cs <- cases[i, ]
  f <- file.path(a[2], paste0(cs$dataset, ".csv"))
  if (!file.exists(f)) f <- paste0(cs$dataset, ".csv")
  d <- read.csv(f, stringsAsFactors = TRUE)
  reml <- toupper(cs$method) == "REML"
  m <- lmerTest::lmer(as.formula(cs$formula), d, REML = reml)
  out <- list(id = cs$id, dataset = cs$dataset, formula = cs$formula, method = toupper(cs$method),
              theta = unname(getME(m, "theta")), sigma = sigma(m),
              anova_satterthwaite = tab(anova(m, type = 3, ddf = "Satterthwaite")),
              satterthwaite = coefs(summary(m, ddf = "Satterthwaite")$coefficients))
  if (reml && nobs(m) <= 2000) {
    out$anova_kenward_roger <- tab(anova(m, type = 3, ddf = "Kenward-Roger"))
    out$kenward_roger <- coefs(summary(m, ddf = "Kenward-Roger")$coefficients)
  }
  r2 <- r2_nakagawa(m); ic <- icc(m)
  out$r2_nakagawa <- list(marginal = unname(r2$R2_marginal), conditional = unname(r2$R2_conditional))
  out$icc <- list(adjusted = unname(ic$ICC_adjusted), unadjusted = unname(ic$ICC_unadjusted))
  res[[cs$id]] <- out
  cat(cs$id, "ok\n")
}
writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), a[3])
