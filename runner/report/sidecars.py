"""Read the per-model parquet sidecars the runner writes beside results.json.

`fits/<model>.parquet` holds row (the 0-based row of the loaded source), the
`data.id_columns` and grouping columns, fitted and residuals (one row per data row);
`fits/<model>_ranef.parquet` holds id, group, level, column, mode, cond_sd (one row
per level and random-effect column). The report only reads them: it never refits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from runner.results import ModelRecord

RANEF_COLUMNS = ("id", "group", "level", "column", "mode", "cond_sd")


@dataclass
class Sidecar:
    fits: pd.DataFrame | None
    ranef: pd.DataFrame | None
    problems: list[str]


def sidecar_paths(results_dir: Path, name: str, model: ModelRecord) -> tuple[Path, Path]:
    """The fits and ranef parquet paths of one model; a `sidecar` that escapes the folder is ignored."""
    rel = model.sidecar or f"fits/{name}.parquet"
    fits = (results_dir / rel).resolve()
    if not fits.is_relative_to(results_dir.resolve()):
        fits = (results_dir / "fits" / f"{name}.parquet").resolve()
    ranef = fits.with_name(fits.name.removesuffix(".parquet") + "_ranef.parquet")
    return fits, ranef


def _read(path: Path, columns: tuple[str, ...], what: str, problems: list[str]) -> pd.DataFrame | None:
    if not path.is_file():
        problems.append(f"no {what} sidecar ({path.name}): its plots are not drawn")
        return None
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # a corrupt sidecar must not break the whole report
        problems.append(f"{what} sidecar {path.name} unreadable: {exc}")
        return None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        problems.append(f"{what} sidecar {path.name} lacks columns {', '.join(missing)}")
        return None
    return frame


def load_sidecar(results_dir: Path, name: str, model: ModelRecord) -> Sidecar:
    """Both sidecars of a model; what is missing or broken becomes a note, not an exception."""
    problems: list[str] = []
    fits_path, ranef_path = sidecar_paths(results_dir, name, model)
    fits = _read(fits_path, ("fitted", "residuals"), "fitted/residuals", problems)
    ranef = _read(ranef_path, RANEF_COLUMNS, "random-effects", problems) if model.random_effects else None
    return Sidecar(fits, ranef, problems)
