# lme4 fits of the random cases (see random_models.py): run inside the directory it generated.
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
cases <- read.delim("cases.tsv", stringsAsFactors = FALSE, colClasses = "character")
out <- list()
for (i in seq_len(nrow(cases))) {
  cs <- cases[i, ]
  d <- read.csv(cs$data, stringsAsFactors = TRUE)
  d$.w <- if (nzchar(cs$weights)) d[[cs$weights]] else rep(1, nrow(d))
  reml <- cs$method == "REML"
  t0 <- Sys.time()
  r <- tryCatch({
    m0 <- lmer(as.formula(cs$r_formula), d, REML = reml, weights = .w)
    m <- lmer(as.formula(cs$r_formula), d, REML = reml, weights = .w,
              control = lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-10, maxfun = 1e5)))
    crit <- function(x) unname(if (reml) REMLcrit(x) else deviance(x))
    if (crit(m) > crit(m0)) m <- m0
    list(id = cs$id, objective_default = crit(m0), objective = crit(m), theta = unname(getME(m, "theta")),
         singular = isSingular(m), fixed = unname(fixef(m)), sigma = sigma(m), msgs = m0@optinfo$conv$lme4$messages)
  }, error = function(e) list(id = cs$id, error = conditionMessage(e)))
  out[[cs$id]] <- r
}
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, null = "null"), "lme4.json")
