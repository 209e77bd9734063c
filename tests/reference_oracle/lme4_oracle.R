# lme4 references for models outside ../shared/reference (the project is checked on cases it
# was not tuned to). Parameters come from a tight refit; `objective_default` is lme4's default fit. Usage from the repo root: Rscript tests/reference_oracle/lme4_oracle.R
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
ex <- "runner/data/examples"
out <- "tests/reference_oracle"
cases <- read.delim(file.path(out, "cases.tsv"), stringsAsFactors = FALSE, colClasses = "character")
for (i in seq_len(nrow(cases))) {
  cs <- cases[i, ]
  src <- file.path(ex, paste0(cs$dataset, ".csv"))
  if (!file.exists(src)) src <- file.path(out, "data", paste0(cs$dataset, ".csv"))  # made for a case
  d <- read.csv(src, stringsAsFactors = TRUE)
  # derived columns for the weights/offset cases (tests/test_lme_oracle.py derives the same)
  d$w3 <- 1 + (seq_len(nrow(d)) - 1) %% 3
  d$off <- 0.5 * ((seq_len(nrow(d)) - 1) %% 7)
  wts <- if (!is.na(cs$weights) && nzchar(cs$weights)) d[[cs$weights]] else NULL
  off <- if (!is.na(cs$offset) && nzchar(cs$offset)) d[[cs$offset]] else NULL
  d$.wts <- if (is.null(wts)) rep(1, nrow(d)) else wts
  d$.off <- if (is.null(off)) rep(0, nrow(d)) else off
  reml <- cs$method == "REML"
  m0 <- lmer(as.formula(cs$r_formula), d, REML = reml, weights = .wts, offset = .off)  # lme4's defaults
  # the same model driven to a tight optimum: lme4's default stop can leave max|grad| ~ 0.01-0.1
  m <- lmer(as.formula(cs$r_formula), d, REML = reml, weights = .wts, offset = .off,
            control = lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e5)))
  crit <- function(x) unname(if (reml) REMLcrit(x) else deviance(x))
  tight <- crit(m) <= crit(m0)
  if (!tight) m <- m0  # bobyqa can stop on a worse boundary point: keep the better fit
  fe <- coef(summary(m))
  vc <- as.data.frame(VarCorr(m))
  res <- list(
    id = cs$id, dataset = cs$dataset, formula = cs$formula, method = cs$method,
    reference_fit = if (tight) "bobyqa rhoend 1e-10" else "lme4 defaults",
    objective_default = unname(if (reml) REMLcrit(m0) else deviance(m0)),
    nobs = nobs(m), objective = unname(if (reml) REMLcrit(m) else deviance(m)),
    loglik = as.numeric(logLik(m)), aic = AIC(m), bic = BIC(m), sigma = sigma(m),
    theta = unname(getME(m, "theta")), singular = isSingular(m),
    ngroups = as.list(ngrps(m)),
    fixed = lapply(seq_len(nrow(fe)), function(j) list(term = rownames(fe)[j], estimate = fe[j, 1], std_error = fe[j, 2])),
    sd = lapply(seq_len(nrow(vc)), function(j) list(group = vc$grp[j], var1 = ifelse(is.na(vc$var1[j]), "", vc$var1[j]),
                                                   var2 = ifelse(is.na(vc$var2[j]), "", vc$var2[j]), sdcor = vc$sdcor[j])),
    lme4_version = as.character(packageVersion("lme4")),
    messages = m0@optinfo$conv$lme4$messages)
  writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"), file.path(out, paste0(cs$id, ".json")))
}
