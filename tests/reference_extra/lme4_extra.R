# Extra lme4 1.1-31 references for tests/test_lme_engine.py (weights, offset, tight optimum).
# Usage (from the repo root): Rscript tests/reference_extra/lme4_extra.R
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
ex <- "runner/data/examples"
out <- "tests/reference_extra"
dump <- function(id, m, data_name, formula, extra = list()) {
  reml <- isREML(m)
  fe <- coef(summary(m))
  vc <- as.data.frame(VarCorr(m))
  res <- c(list(
    id = id, dataset = data_name, formula = formula, method = if (reml) "REML" else "ML",
    nobs = nobs(m), objective = unname(if (reml) REMLcrit(m) else deviance(m)),
    sigma = sigma(m), theta = unname(getME(m, "theta")),
    fixed = lapply(seq_len(nrow(fe)), function(j) list(term = rownames(fe)[j], estimate = fe[j, 1], std_error = fe[j, 2])),
    sd = lapply(seq_len(nrow(vc)), function(j) list(group = vc$grp[j], var1 = ifelse(is.na(vc$var1[j]), "", vc$var1[j]),
                                                   var2 = ifelse(is.na(vc$var2[j]), "", vc$var2[j]), sdcor = vc$sdcor[j])),
    ranef_first = unname(as.list(ranef(m)[[1]][1:3, 1])),
    condsd_first = unname(as.list(sqrt(attr(ranef(m, condVar = TRUE)[[1]], "postVar")[1, 1, 1:3])))),
    extra)
  writeLines(toJSON(res, auto_unbox = TRUE, digits = NA, pretty = TRUE), file.path(out, paste0(id, ".json")))
}
sl <- read.csv(file.path(ex, "sleepstudy.csv"), stringsAsFactors = TRUE)
sl$w <- 1 + (sl$Days %% 3) / 2          # deterministic prior weights
sl$off <- 2 * sl$Days                  # deterministic offset
for (reml in c(TRUE, FALSE)) {
  f <- "Reaction ~ Days + (Days | Subject)"
  m <- lmer(as.formula(f), sl, REML = reml, weights = w)
  dump(paste0("sleepstudy_weights_", if (reml) "reml" else "ml"), m, "sleepstudy", f, list(weights = "w = 1 + (Days %% 3) / 2"))
  m <- lmer(as.formula(f), sl, REML = reml, offset = off)
  dump(paste0("sleepstudy_offset_", if (reml) "reml" else "ml"), m, "sleepstudy", f, list(offset = "off = 2 * Days"))
}
st <- read.csv(file.path(ex, "students.csv"), stringsAsFactors = TRUE)
f <- "test_score ~ age + sex + (age | classroom) + (1 | school) + (1 | province)"
m <- lmer(as.formula(f), st, REML = TRUE,
          control = lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e5)))
dump("students_slopes_tight", m, "students", f, list(note = "students_slopes refitted with bobyqa rhoend 1e-10: lme4's default stops early on this case (max|grad| 0.0107)"))
