"""summary.md carries each model's inference: df and p per fixed effect (lmerTest's
Satterthwaite numbers for sleepstudy), the type III F table, variance intervals, R2/ICC."""

from __future__ import annotations

from run_helpers import run_quiet, write_spec
from runner.report.markdown import summary_markdown


def test_summary_shows_df_p_f_tests_and_r2(tmp_path):
    spec = write_spec(tmp_path, "inf", """
name: inf
data: {example: sleepstudy}
models:
  slopes: {formula: "Reaction ~ Days + (Days|Subject)", inference: {ci: profile}}
""")
    out = run_quiet(spec, tmp_path)
    assert out.exit_code == 0, out.errors
    text = summary_markdown(out.record)
    section = text[text.index("### slopes"):]
    # lmerTest 3.1: Days 10.4673, SE 1.5458, df 17.0, t 6.77, p 3.26e-06
    assert "| Days | 10.4673 | 1.5458 | 17.0 | 6.77 | < 0.001 |" in section
    assert "intervals: profile" in section
    assert "p: satterthwaite" in section
    assert "Type III F tests:" in section and "| Days | 1 | 17.0 |" in section
    # lme4 1.1-31 confint(method = "profile"): sd_(Intercept)|Subject [14.38, 37.72]
    assert "| sd\\_(Intercept)\\|Subject | 24.7404 | [14.38" in section and ", 37.7" in section
    assert "R² marginal" in section and "ICC adjusted" in section
