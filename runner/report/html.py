"""Assemble the spec page and the index page and render them with Jinja.

Autoescape is on for every template and nothing is marked safe: model names, column
names and factor levels are user data, and the plots are data too (`svg.Chart`), drawn
by the `_plots.html.j2` macros.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from runner.report import model_views, plots, views
from runner.report.format import fmt_fixed, fmt_int, fmt_num
from runner.report.sidecars import load_sidecar
from runner.results import ModelRecord, ResultsRecord

TEMPLATES = Path(__file__).parent / "templates"


@functools.cache
def environment() -> Environment:
    """The one Jinja environment (cached: templates compile once per process);
    autoescape everywhere, undefined names are errors."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.globals["secondary_columns"] = views.secondary_columns
    env.filters["num"] = fmt_num
    env.filters["int_sep"] = fmt_int
    return env


def plot_svg(chart: plots.Plot) -> str:
    """One plot as inline SVG markup, through the same autoescaped macro as the page."""
    template = environment().from_string('{% from "_plots.html.j2" import svg %}{{ svg(c) }}')
    return template.render(c=chart)


@dataclass
class ModelView:
    name: str
    anchor: str
    record: ModelRecord
    facts: list[tuple[str, str]]
    fixed_header: list[str] = field(default_factory=list)
    fixed_rows: list[list[views.Cell]] = field(default_factory=list)
    fixed_caption: str | None = None
    tables: list[model_views.TableView] = field(default_factory=list)
    coef: plots.Plot | None = None
    random_rows: list[list[views.Cell]] = field(default_factory=list)
    icc: model_views.IccView = field(default_factory=model_views.IccView)
    diagnostics: list[plots.Plot] = field(default_factory=list)
    caterpillars: list[plots.Plot] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[views.Notice] = field(default_factory=list)
    best: bool = False


def _facts(name: str, m: ModelRecord, record: ResultsRecord) -> list[tuple[str, str]]:
    facts = [("engine", m.engine), ("method", m.method), ("source", m.source)]
    if m.status != "ok":
        return facts
    crit = "REML criterion" if m.method == "REML" else "deviance"
    facts += [
        ("rows", fmt_int(m.nobs)),
        ("parameters", fmt_int(m.npar)),
        ("groups", ", ".join(f"{g} {fmt_int(n)}" for g, n in m.ngroups.items()) or "—"),
        ("logLik", fmt_fixed(m.loglik)),
        (crit, fmt_fixed(m.objective)),
        ("AIC", fmt_fixed(m.aic)),
        ("BIC", fmt_fixed(m.bic)),
        ("residual SD", fmt_num(m.sigma)),
    ]
    if m.ml_refit is not None:
        facts.append(("ML refit", f"logLik {fmt_fixed(m.ml_refit.loglik)}, AIC {fmt_fixed(m.ml_refit.aic)}, "
                                  f"BIC {fmt_fixed(m.ml_refit.bic)}"))
    conv = "yes" if m.converged else ("no" if m.converged is False else "—")
    if m.convergence is not None:
        c = m.convergence
        conv += f" ({c.optimizer}, {fmt_int(c.evaluations)} evaluations"
        if c.max_abs_gradient is not None:
            conv += f", max |gradient| {fmt_num(c.max_abs_gradient, 2)}"
        conv += ")"
    facts += [("converged", conv), ("singular", "yes" if m.singular else "no")]
    timing = record.run.timings.get(name)
    if timing is not None:
        facts.append(("fit time", f"{timing.fit_seconds:.2f} s" + (" (cached)" if timing.cached else "")))
    if m.verify is not None:
        v = m.verify
        diffs = ", ".join(f"{k} {fmt_num(x, 2)}" for k, x in sorted(v.max_rel_diff.items()) if x is not None)
        facts.append((f"verify ({v.engine})", v.status + (f": max rel. diff {diffs}" if diffs else "")
                      + (f" — {v.message}" if v.message else "")))
    return facts


def _caterpillars(side_ranef, name: str, m: ModelRecord, max_levels: int | None) -> list[plots.Plot]:  # noqa: ANN001
    ids = list(dict.fromkeys(r.id for r in m.random_effects if r.group != "Residual"))
    ids += [i for i in dict.fromkeys(side_ranef["id"].astype(str)) if i not in ids]
    out = []
    for i in ids:
        block = side_ranef[side_ranef["id"].astype(str) == i]
        if block.empty:
            continue
        group = str(block["group"].iloc[0])
        title = group if group == i else f"{group} ({i})"
        plot = plots.caterpillar_plot(block, title, name, max_levels)
        if plot is not None:
            out.append(plot)
    return out


def model_view(index: int, name: str, m: ModelRecord, record: ResultsRecord, results_dir: Path,
               notices: list[views.Notice]) -> ModelView:
    """Tables and plots of one model; a failed model gets its error and nothing else."""
    mv = ModelView(name=name, anchor=f"model-{index}", record=m, facts=_facts(name, m, record),
                   warnings=[n for n in notices if n.model == name and n.level != "error"],  # the error box says it
                   best=name in views.best_models(record))
    if m.status != "ok":
        return mv
    mv.fixed_header, mv.fixed_rows = model_views.fixed_effect_rows(m)
    mv.fixed_caption = model_views.fixed_caption(m)
    mv.tables = model_views.inference_tables(m)
    mv.facts += model_views.inference_facts(m)
    mv.coef = plots.coefficient_plot(m.fixed_effects, name) if m.fixed_effects else None
    mv.random_rows = model_views.random_effect_rows(m)
    mv.icc = model_views.icc_view(m)
    side = load_sidecar(results_dir, name, m)
    mv.notes.extend(side.problems)
    if side.fits is not None and m.family == "binomial":  # a 0/1 cloud and a normal QQ plot say nothing here
        mv.diagnostics.append(plots.binned_residual_plot(side.fits["fitted"].to_numpy(),
                                                         side.fits["residuals"].to_numpy(), name))
    elif side.fits is not None:
        mv.diagnostics.append(plots.residual_plot(side.fits["fitted"].to_numpy(), side.fits["residuals"].to_numpy(),
                                                  name))
        mv.diagnostics.append(plots.qq_plot(side.fits["residuals"].to_numpy(), name))
    if side.ranef is not None:
        mv.caterpillars = _caterpillars(side.ranef, name, m, record.spec.report.caterpillar_max_levels)
    return mv


def provenance(record: ResultsRecord) -> list[tuple[str, str]]:
    """Where the numbers come from: enough to reproduce the run."""
    d, e, s = record.data, record.environment, record.spec
    dropped = ", ".join(f"{why}: {fmt_int(n)}" for why, n in sorted(d.dropped.items()) if n) or "none"
    versions = [("mixspec", e.mixspec), ("python", e.python), ("numpy", e.numpy), ("scipy", e.scipy),
                ("pandas", e.pandas), ("statsmodels", e.statsmodels), ("formulaic", e.formulaic)]
    date = record.run.started + (f" → {record.run.finished}" if record.run.finished else "")
    return [
        ("spec file", s.path),
        ("spec sha256", s.sha256),
        ("data source", d.source),
        ("data sha256", d.sha256),
        *([("data columns", f"{', '.join(d.columns)} (the columns read and hashed)")] if d.columns else []),
        ("rows", f"{fmt_int(d.rows)} loaded, {fmt_int(d.rows_used)} used"),
        ("rows dropped", dropped),
        ("missing values", d.na),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions if v)),
        ("git commit", e.git_commit or "—"),
        ("run", f"{date} ({record.run.executor}, {record.run.jobs} job{'s' if record.run.jobs != 1 else ''})"),
    ]


def render_spec_page(record: ResultsRecord, results_dir: Path) -> str:
    """The whole spec page as one self-contained HTML string."""
    notices = views.notices(record)
    models = [model_view(i, name, m, record, results_dir, notices)
              for i, (name, m) in enumerate(record.models.items(), start=1)]
    status, status_text = views.status_of(record)
    return environment().get_template("spec.html.j2").render(
        record=record,
        title=views.report_title(record),
        status=status,
        status_text=status_text,
        provenance=provenance(record),
        notices=views.merged(notices),
        rankings=views.ranking_views(record),
        test_header=views.TEST_HEADER,
        tests=views.test_rows(record),
        test_notes=views.test_notes(record),
        models=models,
        factors=record.factors,
    )


@dataclass(frozen=True)
class IndexEntry:
    name: str
    title: str
    href: str
    best: str
    status: str
    status_text: str
    models: int
    started: str


def render_index_page(entries: list[IndexEntry], problems: list[str]) -> str:
    return environment().get_template("index.html.j2").render(entries=entries, problems=problems)
