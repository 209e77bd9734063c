# lme4 references for mixspec's Python API (tests/test_api_reference.py).
# Usage (from the repository root): Rscript tests/reference_api/make_api_references.R
# For each case: the fit's numbers, predict(m, newdata, allow.new.levels = TRUE),
# predict(m, newdata, re.form = NA), fitted(m), ranef(m, condVar = TRUE) as a data frame,
# and the moments of simulate(m, nsim) beside the exact ones (X beta, diag(Z Sigma Z') + sigma^2).
# lme4 is run to a tight optimum (nloptwrap, tolerances 1e-14), so the reference is the
# optimum itself and not where lme4's default tolerance happens to stop.
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
data_dir <- "runner/data/examples"
out_dir <- "tests/reference_api"
read_data <- function(name) read.csv(file.path(data_dir, paste0(name, ".csv")), stringsAsFactors = TRUE)

cases <- list(
  list(id = "sleepstudy_slopes", dataset = "sleepstudy", formula = "Reaction ~ Days + (Days | Subject)", method = "REML",
       newdata = data.frame(Days = c(0, 5, 9.5, 0, 3, 12, 2), Subject = c(308, 308, 309, 999, 999, 330, 1000))),
  list(id = "sleepstudy_zerocorr_ml", dataset = "sleepstudy", formula = "Reaction ~ Days + (Days || Subject)", method = "ML",
       newdata = data.frame(Days = c(1, 7, 4, 0), Subject = c(308, 372, 999, 333))),
  list(id = "pastes_nested", dataset = "Pastes", formula = "strength ~ 1 + (1 | batch/cask)", method = "REML",
       newdata = data.frame(batch = c("A", "A", "Z", "J", "Z"), cask = c("a", "z", "a", "c", "z"))),
  list(id = "pastes_cask_fixed", dataset = "Pastes", formula = "strength ~ cask + (1 | batch)", method = "ML",
       newdata = data.frame(cask = c("a", "b", "c", "c"), batch = c("A", "B", "Q", "J"))),
  list(id = "penicillin_crossed", dataset = "Penicillin", formula = "diameter ~ 1 + (1 | plate) + (1 | sample)", method = "REML",
       newdata = data.frame(plate = c("a", "x", "a", "y", "m"), sample = c("A", "B", "Z", "Z", "F")))
)
NSIM <- 4000
tight <- lmerControl(optimizer = "nloptwrap", optCtrl = list(ftol_abs = 1e-14, ftol_rel = 1e-14,
                                                              xtol_abs = 1e-12, xtol_rel = 1e-12, maxeval = 1e5))
for (cs in cases) {
  d <- read_data(cs$dataset)
  m <- lmer(as.formula(cs$formula), data = d, REML = cs$method == "REML", control = tight)
  nd <- cs$newdata
  write.csv(nd, file.path(out_dir, paste0(cs$id, "_newdata.csv")), row.names = FALSE)
  p_new <- unname(predict(m, newdata = nd, allow.new.levels = TRUE))
  p_pop <- unname(predict(m, newdata = nd, re.form = NA))
  rr <- as.data.frame(ranef(m, condVar = TRUE))
  ranef_rows <- lapply(seq_len(nrow(rr)), function(j) list(
    grpvar = as.character(rr$grpvar[j]), term = as.character(rr$term[j]), grp = as.character(rr$grp[j]),
    condval = rr$condval[j], condsd = rr$condsd[j]))
  sims <- as.matrix(simulate(m, nsim = NSIM, seed = 20261201))
  Z <- getME(m, "Z"); L <- getME(m, "Lambda")
  ZL <- Z %*% L
  var_exact <- sigma(m)^2 * (rowSums(as.matrix(ZL)^2) + 1)
  fe <- coef(summary(m))
  out <- list(
    id = cs$id, dataset = cs$dataset, formula = cs$formula, method = cs$method,
    objective = unname(if (cs$method == "REML") REMLcrit(m) else deviance(m)),
    sigma = sigma(m), theta = unname(getME(m, "theta")),
    beta = unname(fixef(m)), beta_names = names(fixef(m)),
    vcov = unname(as.matrix(vcov(m))),
    newdata = nd, predict_new_levels = p_new, predict_population = p_pop,
    fitted = unname(fitted(m)), residuals = unname(residuals(m)),
    ranef = ranef_rows,
    simulate = list(nsim = NSIM, seed = 20261201, mean = unname(rowMeans(sims)),
                    var = unname(apply(sims, 1, var)),
                    mean_exact = unname(predict(m, re.form = NA)), var_exact = unname(var_exact)),
    lme4_version = as.character(packageVersion("lme4")))
  writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, dataframe = "columns"),
             file.path(out_dir, paste0(cs$id, ".json")))
  cat(cs$id, "ok\n")
}

# A GLMM: cbpp's binomial model; predictions on the link and the response scale.
d <- read.csv("tests/reference_glmm/data/cbpp.csv", colClasses = c(herd = "factor", period = "factor"))
m <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = d, family = binomial,
           control = glmerControl(tolPwrss = 1e-13))  # as tests/reference_glmm/tight.json
nd <- data.frame(herd = c("1", "5", "99", "15", "99"), period = c("1", "4", "2", "3", "1"))
write.csv(nd, file.path(out_dir, "cbpp_binomial_newdata.csv"), row.names = FALSE)
out <- list(id = "cbpp_binomial", formula = "prop ~ period + (1 | herd)", weights = "size", family = "binomial",
            deviance = deviance(m), theta = unname(getME(m, "theta")), beta = unname(fixef(m)),
            newdata = nd,
            predict_link = unname(predict(m, newdata = nd, allow.new.levels = TRUE)),
            predict_response = unname(predict(m, newdata = nd, allow.new.levels = TRUE, type = "response")),
            predict_population_response = unname(predict(m, newdata = nd, re.form = NA, type = "response")),
            fitted = unname(fitted(m)), lme4_version = as.character(packageVersion("lme4")))
sims <- simulate(m, nsim = NSIM, seed = 20261201)  # each a (successes, failures) matrix
props <- sapply(sims, function(s) s[, 1] / rowSums(s))
out$simulate <- list(nsim = NSIM, mean = unname(rowMeans(props)), var = unname(apply(props, 1, var)))
writeLines(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, dataframe = "columns"),
           file.path(out_dir, "glmm_cbpp_binomial.json"))
cat("cbpp_binomial ok\n")
