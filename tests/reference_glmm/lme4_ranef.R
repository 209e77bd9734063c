# Conditional modes and conditional SDs (ranef(m, condVar = TRUE)) of a few glmer fits, for
# tests/test_glmm_reference.py. Usage: Rscript lme4_ranef.R data ranef.json
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
a <- commandArgs(TRUE)
rd <- function(f) read.csv(file.path(a[1], f), stringsAsFactors = TRUE)
cbpp <- rd("cbpp.csv"); binary <- rd("binary.csv"); counts <- rd("counts.csv")
fits <- list(
  cbpp_prop = glmer(incidence / size ~ factor(period) + (1 | herd), cbpp, binomial, weights = size),
  bin_crossed = glmer(y ~ x + (1 | subject) + (1 | item), binary, binomial),
  bin_slopes = glmer(y ~ x + (x | subject), binary, binomial),
  pois_agq = glmer(y ~ x + offset(log(exposure)) + (1 | site), counts, poisson, nAGQ = 9))
out <- lapply(fits, function(m) {
  re <- ranef(m, condVar = TRUE)
  lapply(names(re), function(g) {
    r <- re[[g]]; pv <- attr(r, "postVar")
    sds <- t(apply(pv, 3, function(v) sqrt(diag(as.matrix(v)))))
    if (ncol(r) == 1) sds <- t(sds)
    list(group = g, levels = rownames(r), columns = colnames(r), modes = unname(as.matrix(r)),
         cond_sd = unname(if (ncol(r) == 1) t(sds) else sds))
  })
})
writeLines(toJSON(out, digits = NA, pretty = TRUE, auto_unbox = TRUE), a[2])
