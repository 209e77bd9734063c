# GLMM references (glmer): Usage: Rscript lme4_glmm.R CASES.tsv DATA_DIR OUT_JSON
# CASES.tsv columns: id, dataset, formula, family, nAGQ, weights (a column name or empty), link (optional)
# A copy of ../../../shared/tools/lme4_glmm.R with an optional link column; with the environment
# variable LME4_TOLPWRSS set (e.g. 1e-13) glmer runs with glmerControl(tolPwrss = that).
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
a <- commandArgs(TRUE)
cases <- read.delim(a[1], stringsAsFactors = FALSE, quote = "", na.strings = "")
res <- list()
for (i in seq_len(nrow(cases))) {
  c <- as.list(cases[i, ])
  d <- read.csv(file.path(a[2], paste0(c$dataset, ".csv")), stringsAsFactors = TRUE)
  args <- list(formula = as.formula(c$formula), data = d, family = if (!is.null(c$link) && !is.na(c$link)) get(c$family)(link = c$link) else get(c$family)(), nAGQ = c$nAGQ)
  if (!is.na(c$weights)) args$weights <- d[[c$weights]]
  if (nzchar(Sys.getenv("LME4_TOLPWRSS"))) args$control <- glmerControl(tolPwrss = as.numeric(Sys.getenv("LME4_TOLPWRSS")))
  t0 <- proc.time()[["elapsed"]]
  m <- do.call(glmer, args)
  secs <- proc.time()[["elapsed"]] - t0
  fe <- coef(summary(m)); vc <- as.data.frame(VarCorr(m)); ll <- logLik(m)
  res[[c$id]] <- c(c, list(nobs = nobs(m), loglik = as.numeric(ll), df = attr(ll, "df"), aic = AIC(m), bic = BIC(m),
    deviance = deviance(m), objective = -2 * as.numeric(ll), singular = isSingular(m), theta = unname(getME(m, "theta")),
    fixed_effects = lapply(seq_len(nrow(fe)), function(j) list(term = rownames(fe)[j], estimate = fe[j, 1], std_error = fe[j, 2], z = fe[j, 3], p_value = fe[j, 4])),
    random_effects = lapply(seq_len(nrow(vc)), function(j) { r <- vc[j, ]
      if (is.na(r$var2)) list(group = r$grp, term = r$var1, variance = r$vcov, sd = r$sdcor) else list(group = r$grp, term = r$var1, term2 = r$var2, covariance = r$vcov, corr = r$sdcor) }),
    lme4_version = as.character(packageVersion("lme4")), fit_seconds = secs))
  cat(c$id, "ok", secs, "s\n")
}
writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), a[3])
