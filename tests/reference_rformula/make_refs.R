# R's model.matrix and lme4 fits for the formula-language cases in cases.tsv.
# Usage (from the repository root): Rscript tests/reference_rformula/make_refs.R
# Writes tests/reference_rformula/<id>.json: model.matrix column names, its first 5 rows
# and column sums, the random terms' column names (cnms), and lmer's fixed effects, SEs,
# objective, theta and sigma. Data: runner/data/examples, else tests/reference_rformula/data.
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
here <- "tests/reference_rformula"
cases <- read.delim(file.path(here, "cases.tsv"), stringsAsFactors = FALSE, quote = "", na.strings = character())
read_data <- function(name) {
  f <- file.path("runner/data/examples", paste0(name, ".csv"))
  if (!file.exists(f)) f <- file.path(here, "data", paste0(name, ".csv"))
  read.csv(f, stringsAsFactors = TRUE, check.names = FALSE)
}
for (i in seq_len(nrow(cases))) {
  cs <- cases[i, ]
  d <- read_data(cs$dataset)
  if (nzchar(cs$contrasts)) {
    for (kv in strsplit(cs$contrasts, ";")[[1]]) {
      p <- strsplit(kv, "=")[[1]]
      contrasts(d[[p[1]]]) <- paste0("contr.", p[2])
    }
  }
  reml <- toupper(cs$method) == "REML"
  m <- lmer(as.formula(cs$formula), data = d, REML = reml)
  X <- getME(m, "X")
  fe <- coef(summary(m))
  out <- list(
    id = cs$id, dataset = cs$dataset, formula = cs$formula, method = toupper(cs$method),
    contrasts = cs$contrasts,
    columns = colnames(X), head = unname(lapply(1:5, function(r) unname(X[r, ]))),
    colsums = unname(colSums(X)), nobs = nobs(m),
    cnms = lapply(getME(m, "cnms"), function(x) x),
    offset = if (is.null(getME(m, "offset")) || all(getME(m, "offset") == 0)) NULL else unname(head(getME(m, "offset"), 5)),
    fixed = lapply(seq_len(nrow(fe)), function(j) list(term = rownames(fe)[j], estimate = unname(fe[j, 1]),
                                                      std_error = unname(fe[j, 2]))),
    objective = unname(if (reml) REMLcrit(m) else deviance(m)),
    theta = unname(getME(m, "theta")), sigma = sigma(m),
    y_head = unname(head(getME(m, "y"), 5)),
    lme4_version = as.character(packageVersion("lme4")))
  writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, null = "null"),
             file.path(here, paste0(cs$id, ".json")))
  cat(cs$id, "ok\n")
}
