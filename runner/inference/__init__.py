"""Statistical inference for linear mixed models fitted by the `lme` engine.

lmerTest 3.1's Satterthwaite df, pbkrtest's Kenward-Roger adjustment, type III F tests,
Wald / profile / parametric-bootstrap intervals, bootstrap LRT p-values, Nakagawa R2
and ICC. Everything works from the `Design` and the fitted `Fit` through the engine's
blocked Gram `Problem` (never an n x n matrix).
"""
