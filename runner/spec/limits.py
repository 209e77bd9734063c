"""Size limits of a spec, in one place: a spec from a pull request is untrusted input.

Why: without bounds a small file can make `mixspec validate` (which CI runs on every
pull request) take minutes or gigabytes: thousands of models, megabyte strings fed to
the formula and expectation grammars, a simulated data set of billions of rows, YAML
nested deeper than Python's recursion limit. Each bound is far above any real spec.
"""

from __future__ import annotations

MAX_SPEC_BYTES = 1_048_576  # 1 MB: the spec file itself
MAX_MODELS = 500  # models plus variants
MAX_STRING = 10_000  # characters of any one YAML scalar (keys included): formulas, filters, expectations
MAX_DEPTH = 50  # nesting of YAML mappings and sequences (a real spec needs about 6)
MAX_SIMULATE_ROWS = 10_000_000  # rows of `data.simulate` (provinces x schools x classrooms x students x scores)
MAX_NSIM = 100_000  # bootstrap / simulation replicates
MAX_NAGQ = 25  # adaptive Gauss-Hermite quadrature points (GLMMs)
