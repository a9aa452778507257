"""Writing an analysis to files: the report folder (tables/*.csv, plots/*.png, summary.md) and weights JSON.

Works on any analysis that offers ``tables()``, ``figure_names()``,
``png(name)`` and ``markdown()`` (:class:`cpdm.analysis.campaign_report.Analysis`
for a rating campaign, :class:`cpdm.analysis.two_afc_report.TwoAfcAnalysis`
for a 2AFC one).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cpdm.analysis import data as data_module
from cpdm.errors import CpdmError


def file_stem(name: str) -> str:
    return name.replace("-", "neg_").replace(" ", "_")


def default_report_dir(ws, campaign: str) -> Path:
    """Where ``cpdm analyze`` writes a campaign's report unless told otherwise."""
    return ws.exports_dir / f"report-{campaign}"


def save_weights(weights, path) -> Path:
    """Write weights JSON; an unwritable path is a clear error."""
    path = data_module.ensure_writable(Path(path))
    try:
        return weights.save(path)
    except OSError as exc:
        raise CpdmError(f"cannot write {path}: {exc.strerror or exc}") from exc


def write_report(analysis, out_dir) -> list[Path]:
    """Write tables/*.csv, plots/*.png and summary.md under ``out_dir``; returns the files written."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise CpdmError(f"cannot write the report to {out_dir}: it is a file")
    written = []
    try:
        (out_dir / "tables").mkdir(parents=True, exist_ok=True)
        (out_dir / "plots").mkdir(parents=True, exist_ok=True)
        for name, table in analysis.tables().items():
            path = out_dir / "tables" / f"{file_stem(name)}.csv"
            table.to_csv(path, index=False)
            written.append(path)
        for name in analysis.figure_names():
            path = out_dir / "plots" / f"{name}.png"
            path.write_bytes(analysis.png(name))
            written.append(path)
        summary = out_dir / "summary.md"
        summary.write_text(analysis.markdown(), encoding="utf-8")
        written.append(summary)
    except OSError as exc:
        raise CpdmError(f"cannot write the report to {out_dir}: {exc.strerror or exc}") from exc
    return written


def json_safe(value):
    """Replace NaN/inf by None and numpy scalars by Python ones, recursively (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
