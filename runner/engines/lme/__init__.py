"""The native `lme` engine (lme4's criterion, MixedModels.jl's blocked Cholesky).

The package itself imports nothing: its submodules pull in scipy.optimize, which the
spec's light parts (families, links) must not pay for.
"""
