# lme4 1.1-31 anova() of pairs nested only through the marginal covariance of y.
# Rscript tests/reference_nesting/lme4_nesting.R /work/shared/data tests/reference_nesting/nesting.json
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
args <- commandArgs(TRUE)
pastes <- read.csv(file.path(args[1], "Pastes.csv"), stringsAsFactors = TRUE)
fits <- list(
  nested = lmer(strength ~ 1 + (1 | batch/cask), pastes, REML = FALSE),
  intercept = lmer(strength ~ 1 + (1 | batch), pastes, REML = FALSE),
  unstructured = lmer(strength ~ 1 + (0 + cask | batch), pastes, REML = FALSE,
                      control = lmerControl(check.conv.singular = "ignore")))
row <- function(small, large) {
  a <- anova(fits[[small]], fits[[large]])
  list(small = small, large = large, chisq = a$Chisq[2], df = a$Df[2], p_value = a$`Pr(>Chisq)`[2],
       loglik = c(as.numeric(logLik(fits[[small]])), as.numeric(logLik(fits[[large]]))),
       npar = a$npar)
}
out <- list(lme4 = as.character(packageVersion("lme4")),
            formulas = lapply(fits, function(f) deparse(formula(f))),
            tests = list(row("nested", "unstructured"), row("intercept", "unstructured")))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE), args[2])
