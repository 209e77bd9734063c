"""Realistic results.json + sidecars without fitting: for the report tests and benchmarks/bench_report.py.

The numbers are lme4's (students, InstEval; see tests/reference/), the per-row and
per-level arrays are simulated with a fixed seed. `hostile` puts `<script>` into a
model name, a factor level, a fixed-effect term, a random-effect column and the report
title, so that every plot carries it, to test escaping end to end.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import chi2, norm

from runner.fit import Convergence, FitWarning, FixedEffect, RandomEffect
from runner.results import (
    DataInfo,
    Environment,
    ExpectationRecord,
    FactorRecord,
    MLRefit,
    ModelRecord,
    RankingGroup,
    RankingRow,
    ReportOptions,
    ResultsRecord,
    RunInfo,
    SpecInfo,
    TestRecord,
    Timing,
)

EVIL = "<script>alert(1)</script>"
_ENV = Environment(mixspec="0.1.0", python="3.11.2", numpy="2.4.0", scipy="1.16.0", pandas="3.0.0",
                   statsmodels="0.14.5", formulaic="1.2.0", git_commit="9413c4b" + "0" * 33)


def _fe(term: str, lme4: str, est: float, se: float, variable: str | None = None,
        level: str | None = None) -> FixedEffect:
    z = est / se
    return FixedEffect(term=term, lme4_name=lme4, variable=variable, level=level, estimate=est, std_error=se,
                       statistic=z, df=None, p_value=float(2 * norm.sf(abs(z))),
                       ci_low=est - 1.959963984540054 * se, ci_high=est + 1.959963984540054 * se)


def _var(group: str, term: str, variance: float, id_: str | None = None) -> RandomEffect:
    return RandomEffect(id=id_ or group, group=group, term=term, variance=variance, sd=math.sqrt(variance))


def _write_sidecars(out: Path, name: str, fitted: np.ndarray, resid: np.ndarray,
                    ranef: list[tuple[str, str, list[str], str, np.ndarray, np.ndarray]]) -> str:
    fits = out / "fits"
    fits.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^\w.-]", "_", name)  # a model name is user data, not a safe file name
    pd.DataFrame({"fitted": fitted, "residuals": resid}).to_parquet(fits / f"{name}.parquet", index=False)
    frames = [pd.DataFrame({"id": i, "group": g, "level": levels, "column": col, "mode": modes, "cond_sd": sds})
              for i, g, levels, col, modes, sds in ranef]
    pd.concat(frames, ignore_index=True).to_parquet(fits / f"{name}_ranef.parquet", index=False)
    return f"fits/{name}.parquet"


def _levels(rng: np.random.Generator, labels: list[str], sd: float, col: str, group: str,
            id_: str | None = None) -> tuple[str, str, list[str], str, np.ndarray, np.ndarray]:
    modes = rng.normal(0, sd, len(labels))
    sds = np.full(len(labels), sd * 0.35) * rng.uniform(0.8, 1.2, len(labels))
    return (id_ or group, group, labels, col, modes, sds)


def students_results(out_dir: Path, hostile: bool = False, failed_model: bool = False) -> Path:
    """The students spec: intercepts (REML), slopes (REML), an ML model; ranking on ML refits."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(20240607)
    n = 11520
    provinces = [f"P{p}" for p in range(1, 9)]
    schools = [f"{p}S{s}" for p in provinces for s in range(1, 7)]
    classrooms = [f"{s}C{c}" for s in schools for c in range(1, 5)]
    if hostile:
        classrooms[0] = EVIL
    slopes = "slopes" if not hostile else EVIL
    sex_fe = ("sex[T.M]", "sexM", "sex", "M")
    intercepts = ModelRecord(
        status="ok", formula="test_score ~ age + sex + (1 | classroom) + (1 | school) + (1 | province)",
        engine="lme", method="REML", nobs=n, npar=7,
        ngroups={"classroom": 192, "school": 48, "province": 8},
        theta=[0.51624302192699, 0.390125105246322, 0.346971283338681],
        theta_names=["classroom.(Intercept)", "school.(Intercept)", "province.(Intercept)"],
        sigma=10.0542718960533, loglik=-43238.9558165304, objective=86477.9116330608,
        aic=86491.9116330608, bic=86543.3745126006,
        ml_refit=MLRefit(loglik=-43238.0188306804, deviance=86476.0376613608, aic=86490.0376613609,
                         bic=86541.5005409006, npar=7),
        p_method="wald-z", ci_method="wald",
        fixed_effects=[_fe("Intercept", "(Intercept)", 25.5958267673007, 1.78593855594785),
                       _fe("age", "age", 2.02118540286362, 0.0948556233001239, "age"),
                       _fe(*sex_fe[:2], -1.7913952462845, 0.192344323781929, *sex_fe[2:])],
        random_effects=[_var("classroom", "Intercept", 26.9407473980027), _var("school", "Intercept", 15.3854091071258),
                        _var("province", "Intercept", 12.1699366082458), _var("Residual", "", 101.088383359767)],
        converged=True, singular=False,
        convergence=Convergence(converged=True, optimizer="bobyqa", message="converged", evaluations=83,
                                max_abs_gradient=2.1e-6),
    )
    slope_model = ModelRecord(
        status="ok", source="variant of intercepts",
        formula="test_score ~ age + sex + (age | classroom) + (1 | school) + (1 | province)",
        engine="lme", method="REML", nobs=n, npar=9,
        ngroups={"classroom": 192, "school": 48, "province": 8},
        theta=[0.932289801205604, -0.0676401849743996, 0.0429516913861011, 0.39175974450834, 0.349840405347804],
        sigma=10.0226561619877, loglik=-43232.2565708515, objective=86464.5131417029,
        aic=86482.5131417029, bic=86548.6797011112,
        ml_refit=MLRefit(loglik=-43231.4794423503, deviance=86462.9588847006, aic=86480.9588847007,
                         bic=86547.1254441089, npar=9),
        fixed_effects=[_fe("Intercept", "(Intercept)", 25.5905063826596, 1.87457085296432),
                       _fe("age", "age", 2.02226964461894, 0.110953123024986, "age"),
                       _fe(*sex_fe[:2], -1.79542516501105, 0.192146041706169, *sex_fe[2:])],
        random_effects=[_var("classroom", "Intercept", 87.3107120181322), _var("classroom", "age", 0.644916607467346),
                        RandomEffect(id="classroom", group="classroom", term="Intercept", term2="age",
                                     covariance=-6.33463189612922, corr=-0.844181514390997),
                        _var("school", "Intercept", 15.4171919262938), _var("province", "Intercept", 12.2943507306948),
                        _var("Residual", "", 100.453636541429)],
        converged=True, singular=False,
        convergence=Convergence(converged=True, optimizer="bobyqa", evaluations=214, max_abs_gradient=8.4e-5),
        warnings=[FitWarning(code="scale_x", message="age has a large mean relative to its SD; consider centering")],
    )
    models = {"intercepts": intercepts, slopes: slope_model}
    if failed_model:
        models["all_slopes"] = ModelRecord(
            status="failed", error="LinAlgError: Cholesky factor not positive definite at theta=[...]",
            formula="test_score ~ age + sex + (age | classroom) + (age | school) + (age | province)",
            engine="lme", method="REML")
    for name, m in models.items():
        if m.status != "ok":
            continue
        fitted = 40 + rng.normal(0, 6, n)
        resid = rng.standard_t(8, n) * (m.sigma or 10) * 0.9
        ranef = [_levels(rng, classrooms, 5.2, "Intercept", "classroom")]
        if name == slopes:
            ranef.append(_levels(rng, classrooms, 0.8, "age", "classroom"))
        ranef += [_levels(rng, schools, 3.9, "Intercept", "school"), _levels(rng, provinces, 3.5, "Intercept", "province")]
        if hostile:
            ranef[0][4][0] = 40.0  # the hostile level has the largest mode, so the caterpillar shows it
        m.sidecar = _write_sidecars(out_dir, name, fitted, resid, ranef)
    aics = {"intercepts": 86490.0376613609, slopes: 86480.9588847007}
    best = min(aics, key=aics.__getitem__)
    w = {k: math.exp(-(v - aics[best]) / 2) for k, v in aics.items()}
    total = sum(w.values())
    rows = [RankingRow(model=k, criterion="AIC", method="ML", fit_used="ml_refit", value=aics[k],
                       delta=aics[k] - aics[best], weight=w[k] / total, loglik=models[k].ml_refit.loglik,  # type: ignore[union-attr]
                       npar=models[k].npar or 0, best=k == best)
            for k in sorted(aics, key=aics.__getitem__)]
    chisq = 2 * (-43231.4794423503 + 43238.0188306804)
    test = TestRecord(small="intercepts", large=slopes, refit_ml=True, method="ML", npar=[7, 9],
                      loglik=[-43238.0188306804, -43231.4794423503], chisq=chisq, df=2,
                      p_value=float(chi2.sf(chisq, 2)),
                      p_value_boundary=float(0.5 * chi2.sf(chisq, 1) + 0.5 * chi2.sf(chisq, 2)),
                      boundary_note="mixture 0.5 χ²(1) + 0.5 χ²(2): one variance tested at its boundary")
    record = ResultsRecord(
        spec=SpecInfo(name="students", title="Test scores by classroom, school and province",
                      path="specs/students.yaml", sha256="3f9c" + "ab" * 30),
        data=DataInfo(source="example: students", sha256="77e1" + "cd" * 30, rows=n + 3, rows_used=n,
                      dropped={"missing": 3}),
        environment=_ENV,
        factors={"sex": FactorRecord(levels=["F", "M"], reference="F"),
                 ("classroom" if not hostile else EVIL): FactorRecord(levels=classrooms, reference=None)},
        models=models,
        ranking=[RankingGroup(models=list(aics), rows=rows,
                              note="all_slopes failed and is not ranked" if failed_model else None)],
        tests=[test],
        expectations=[ExpectationRecord(text="best: slopes", passed=best == "slopes",
                                        detail=f"best by AIC is {best}"),
                      ExpectationRecord(text="fixed: age > 0", passed=True, detail="age = 2.021 > 0 in every model")],
        run=RunInfo(started="2025-01-01T12:00:00+00:00", finished="2025-01-01T12:00:04+00:00",
                    timings={"intercepts": Timing(fit_seconds=0.41, cached=False),
                             slopes: Timing(fit_seconds=2.2, cached=False)}),
    )
    path = out_dir / "results.json"
    path.write_text(record.model_dump_json(indent=2))
    return path


def insteval_results(out_dir: Path, models: int = 2) -> Path:
    """InstEval-sized: 73,421 rows, s 2,972 levels, d 1,128, dept:service 28, `models` models."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(7)
    n = 73421
    s_levels = [str(i) for i in range(1, 2973)]
    d_levels = [str(i) for i in range(1, 1129)]
    ds_levels = [f"{d}:{sv}" for d in range(1, 15) for sv in (0, 1)]
    recs: dict[str, ModelRecord] = {}
    for k in range(models):
        name = "crossed" if k == 0 else f"crossed_{k}"
        m = ModelRecord(
            status="ok", formula="y ~ service + (1 | s) + (1 | d) + (1 | dept:service)", engine="lme",
            method="REML", nobs=n, npar=6, ngroups={"s": 2972, "d": 1128, "dept:service": 28},
            theta=[0.275903198614212, 0.435414820710289, 0.0931758569411267], sigma=1.17684315166973,
            loglik=-118830.767859895, objective=237661.535719789, aic=237673.535719789, bic=237728.759511453,
            fixed_effects=[_fe("Intercept", "(Intercept)", 3.28067253802823, 0.0352631006528858),
                           _fe("service", "service", -0.0534957389406981, 0.0445438413673268, "service")],
            random_effects=[_var("s", "Intercept", 0.105426706531649), _var("d", "Intercept", 0.262569080869138),
                            _var("dept:service", "Intercept", 0.0120238613642188),
                            _var("Residual", "", 1.38495980363194)],
            converged=True, singular=False)
        fitted = 3.2 + rng.normal(0, 0.45, n)
        y = np.clip(np.round(fitted + rng.normal(0, 1.1, n)), 1, 5)
        m.sidecar = _write_sidecars(out_dir, name, fitted, y - fitted, [
            _levels(rng, s_levels, 0.32, "Intercept", "s"), _levels(rng, d_levels, 0.51, "Intercept", "d"),
            _levels(rng, ds_levels, 0.11, "Intercept", "dept:service")])
        recs[name] = m
    record = ResultsRecord(
        spec=SpecInfo(name="insteval", path="specs/insteval.yaml", sha256="0" * 64),
        data=DataInfo(source="path: tests/data/InstEval.csv.gz", sha256="1" * 64, rows=n, rows_used=n),
        environment=_ENV, models=recs,
        run=RunInfo(started="2025-01-01T12:00:00+00:00"),
    )
    path = out_dir / "results.json"
    path.write_text(record.model_dump_json(indent=2))
    return path


def sleepstudy_results(out_dir: Path, hostile: bool = False) -> Path:
    """Small and fast: sleepstudy with a correlated slope, an uncorrelated one (ids Subject,
    Subject.1) and an ML intercept model, so the ranking mixes ML refits and an own ML fit."""
    out_dir = Path(out_dir)
    rng = np.random.default_rng(180)
    n = 180
    subjects = [str(s) for s in (308, 309, 310, 330, 331, 332, 333, 334, 335, 337, 349, 350, 351, 352, 369, 370,
                                 371, 372)]
    if hostile:
        subjects[0] = EVIL
    fe = [("Intercept", "(Intercept)"), ("Days" if not hostile else f"Days{EVIL}", "Days")]
    days = "Days" if not hostile else f"Days{EVIL}"  # a random-slope column: a caterpillar panel title
    slopes = ModelRecord(
        status="ok", formula="Reaction ~ Days + (Days | Subject)", engine="lme", method="REML", nobs=n, npar=6,
        ngroups={"Subject": 18}, theta=[0.966741773967412, 0.0151690588960361, 0.230909953207795],
        sigma=25.5917957216753, loglik=-871.814135979976, objective=1743.62827195995, aic=1755.62827195995,
        bic=1774.78601306529,
        ml_refit=MLRefit(loglik=-875.969672231605, deviance=1751.93934446321, aic=1763.93934446321,
                         bic=1783.09708556855, npar=6),
        fixed_effects=[_fe(*fe[0], 251.405104848485, 6.82459669495491), _fe(*fe[1], 10.467285959596, 1.54578964390598)],
        random_effects=[_var("Subject", "Intercept", 612.100158024769), _var("Subject", "Days", 35.0717144509388),
                        RandomEffect(id="Subject", group="Subject", term="Intercept", term2="Days",
                                     covariance=9.60440895115776, corr=0.0655512382381282),
                        _var("Residual", "", 654.940008259961)],
        converged=True, singular=False)
    uncorrelated = ModelRecord(
        status="ok", formula="Reaction ~ Days + (Days || Subject)", engine="lme", method="REML", nobs=n, npar=5,
        ngroups={"Subject": 18}, theta=[0.979896527914237, 0.234231225347045], sigma=25.5652792015696,
        loglik=-871.834646790741, objective=1743.66929358148, aic=1753.66929358148, bic=1769.63407783593,
        ml_refit=MLRefit(loglik=-876.001627569942, deviance=1752.00325513988, aic=1762.00325513988,
                         bic=1777.96803939433, npar=5),
        fixed_effects=[_fe(*fe[0], 251.405104848483, 6.88538081723721), _fe(*fe[1], 10.467285959596, 1.55956909806857)],
        random_effects=[_var("Subject", "Intercept", 627.56905083573),
                        _var("Subject", "Days", 35.8583796393533, id_="Subject.1"),
                        _var("Residual", "", 653.583500654207)],
        converged=True, singular=False)
    intercept = ModelRecord(
        status="ok", formula="Reaction ~ Days + (1 | Subject)", engine="lme", method="ML", nobs=n, npar=4,
        ngroups={"Subject": 18}, theta=[1.16561178863622], sigma=30.8954338733111, loglik=-897.039321502613,
        objective=1794.07864300523, aic=1802.07864300523, bic=1814.85047040879,
        fixed_effects=[_fe(*fe[0], 251.405104848484, 9.50618519288694), _fe(*fe[1], 10.467285959596, 0.801735421659495)],
        random_effects=[_var("Subject", "Intercept", 1296.87004549211), _var("Residual", "", 954.527834220139)],
        converged=True, singular=False)
    names = {"intercept": intercept, "slopes": slopes, ("uncorrelated" if not hostile else EVIL): uncorrelated}
    for name, m in names.items():
        fitted = 250 + 10 * np.tile(np.arange(10), 18) + rng.normal(0, 30, n)
        ranef = [("Subject", "Subject", subjects, "Intercept", rng.normal(0, 24, 18), np.full(18, 12.0))]
        if "Days" in m.formula.split("+")[-1]:
            ids = "Subject" if "||" not in m.formula else "Subject.1"
            ranef.append((ids, "Subject", subjects, days, rng.normal(0, 6, 18), np.full(18, 2.3)))
        m.sidecar = _write_sidecars(out_dir, name, fitted, rng.normal(0, m.sigma or 25, n), ranef)
    ml = {k: (m.ml_refit.aic if m.ml_refit else m.aic, m.ml_refit.loglik if m.ml_refit else m.loglik, m.npar,
              "ml_refit" if m.ml_refit else "own") for k, m in names.items()}
    order = sorted(ml, key=lambda k: ml[k][0])
    w = {k: math.exp(-(ml[k][0] - ml[order[0]][0]) / 2) for k in order}
    rows = [RankingRow(model=k, criterion="AIC", method="ML", fit_used=ml[k][3], value=ml[k][0],  # type: ignore[arg-type]
                       delta=ml[k][0] - ml[order[0]][0], weight=w[k] / sum(w.values()), loglik=ml[k][1],
                       npar=ml[k][2] or 0, best=k == order[0]) for k in order]
    unc = order[0]
    chisq = 2 * (-875.969672231605 + 876.001627569942)
    record = ResultsRecord(
        spec=SpecInfo(name="sleepstudy", title="Reaction time under sleep deprivation", path="specs/sleepstudy.yaml",
                      sha256="5" * 64, report=ReportOptions(title=f"Sleep {EVIL}" if hostile else None)),
        data=DataInfo(source="example: sleepstudy", sha256="6" * 64, rows=n, rows_used=n),
        environment=_ENV,
        factors={"Subject": FactorRecord(levels=subjects)},
        models=names,
        ranking=[RankingGroup(models=list(names), rows=rows)],
        tests=[TestRecord(small=unc, large="slopes", refit_ml=True, method="ML", npar=[5, 6],
                          loglik=[-876.001627569942, -875.969672231605], chisq=chisq, df=1,
                          p_value=float(chi2.sf(chisq, 1)), p_value_boundary=None,
                          boundary_note="correlation tested in the interior: no boundary correction")],
        expectations=[ExpectationRecord(text="best: uncorrelated", passed=unc == "uncorrelated",
                                        detail=f"best by AIC is {unc}")],
        run=RunInfo(started="2025-01-01T12:00:00+00:00"),
    )
    path = out_dir / "results.json"
    path.write_text(record.model_dump_json(indent=2))
    return path
