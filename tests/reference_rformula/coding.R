# R's model.matrix coding rules and helpers on a small synthetic frame -> coding.json.
# Usage (from the repository root): Rscript tests/reference_rformula/coding.R
suppressPackageStartupMessages(library(jsonlite))
d <- data.frame(a = factor(rep(c("p", "q", "r"), 4)), b = factor(rep(c("u", "v"), each = 6)),
                x = c(1.5, 2, 3.25, 4, 5, 6.5, 7, 8, 9.5, 10, 11, 12.75),
                n = c(0.5, 10, 2, 1e5, 2, 0.5, 10, 2, 1e5, 2, 0.5, 10), s = c("10", "2.5", "x1"))
d$s <- c("10", "2.5", "7")[rep(1:3, 4)]
formulas <- c("~ a:b", "~ 0 + a:b", "~ x:a", "~ a + x:a:b", "~ 0 + x + a", "~ 0 + a + b", "~ b + a:b",
              "~ a*b - a:b", "~ (a + b + x)^2", "~ a/b", "~ (a + b)/x", "~ x %in% a", "~ factor(n)",
              "~ as.numeric(s)", "~ I(x %% 2) + I(x %/% 2)", "~ I(x > 4 & x < 10)", "~ exp(x/10) + expm1(x/10) + log1p(x) + log2(x) + abs(x - 5)",
              "~ C(a, contr.helmert):x", "~ 0 + C(a, contr.sum)", "~ scale(x, center = FALSE)", "~ scale(x, scale = FALSE)",
              "~ poly(x, 3, raw = TRUE)", "~ relevel(a, ref = 2)", "~ C(b, contr.SAS)", "~ x + I(-x^2) + I((x + 1)^2)",
              "~ factor(a, levels = c('r', 'p', 'q'))", "~ ordered(a)", "~ factor(n, ordered = TRUE)",
              "~ factor(n, levels = c(2, 10, 0.5, 1e5))", "~ as.ordered(n):x")
out <- lapply(formulas, function(f) {
  X <- model.matrix(as.formula(f), d)
  list(formula = f, columns = colnames(X), X = unname(lapply(seq_len(nrow(X)), function(i) unname(X[i, ]))),
       labels = attr(terms(as.formula(f)), "term.labels"))
})
p <- poly(d$x, 3)
out2 <- list(cases = out, poly = list(x = d$x, alpha = attr(p, "coefs")$alpha, norm2 = attr(p, "coefs")$norm2,
             new = c(0, 5.5, 20), predicted = unname(lapply(1:3, function(i) unname(predict(p, c(0, 5.5, 20))[i, ])))),
             contr_poly5 = unname(lapply(1:5, function(i) unname(contr.poly(5)[i, ]))))
writeLines(toJSON(out2, auto_unbox = TRUE, digits = NA, pretty = TRUE), "tests/reference_rformula/coding.json")
