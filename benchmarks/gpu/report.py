"""The suite's results: one JSON file per device and day, a Markdown table beside it, and the RESULT line.

A rerun on the same device and day (``--only`` the parts that failed)
replaces those parts in the day's file and keeps the others, so one file
ends up holding every part.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.gpu.harness import DONE, Figure
from benchmarks.gpu.models import slug

WEIGHTS_STATEMENT = ("Random-initialised full-size architectures (no weights can be downloaded on the machine): "
                     "the figures are speed and memory, not quality.")
DRY_RUN_STATEMENT = ("Dry run: the same code on the CPU with shrunk or tiny models; the figures only show that every "
                     "step runs.")
# Figures the RESULT line repeats, by a short name.
HEADLINES = {
    "scoring_speedup": "engine --precision auto: speed-up over the reference",
    "sd21_cpdm_b9_img_s": "sd2.1 cpdm, batch 9",
    "sd21_ratio_b9": "sd2.1 cpdm / diffusers fastest eager, batch 9",
    "uce_s": "uce including loading",
    "esd_x_1000_min": "esd-x: projected at its defaults",
    "study_s": "small study: enqueue to report CSV",
}


def results_path(out: Path, device_name: str, date: str, dry_run: bool) -> Path:
    """``OUT/gpu-<device>-<date>.json`` (``gpu-dry-run-...`` for a dry run)."""
    prefix = "gpu-dry-run" if dry_run else "gpu"
    return Path(out) / f"{prefix}-{slug(device_name)}-{date}.json"


def merged(previous: dict | None, current: dict) -> dict:
    """``current``, with the parts it did not run taken from ``previous`` (the same device's file of the day)."""
    if not previous:
        return current
    parts = dict(previous.get("parts", {}))
    parts.update(current["parts"])
    return {**current, "parts": parts}


def write_results(results: dict, path: Path) -> Path:
    """Write (merging with the day's earlier file) the JSON and its Markdown table; the table's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    combined = merged(previous, results)
    path.write_text(json.dumps(combined, indent=1) + "\n", encoding="utf-8")
    table = path.with_suffix(".md")
    table.write_text(markdown(combined), encoding="utf-8")
    return table


def figures_of(part: dict) -> list[Figure]:
    return [Figure(**figure) for figure in part.get("figures", [])]


def cell(text) -> str:
    """Text for a Markdown table cell (a pipe would end the cell)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(results: dict) -> str:
    """The results as a Markdown page: what was measured where, one table, then how each part ended."""
    device, software = results.get("device", {}), results.get("software", {})
    lines = [f"# cpdm GPU suite: {device.get('name', 'unknown device')}, {results.get('date', '')}", ""]
    lines.append(DRY_RUN_STATEMENT if results.get("dry_run") else WEIGHTS_STATEMENT)
    lines.append("")
    lines.append("Device: " + ", ".join(f"{key} {value}" for key, value in device.items()) + ".  ")
    lines.append("Software: " + ", ".join(f"{key} {value}" for key, value in software.items()) + ".")
    lines += ["", "| part | figure | value | target | met | detail |", "|---|---|---|---|---|---|"]
    for name, part in results.get("parts", {}).items():
        for figure in figures_of(part):
            met = "" if figure.met is None else ("yes" if figure.met else "**no**")
            lines.append(f"| {name} | {cell(figure.name)} | {cell(figure.value_text())} | {cell(figure.target)} "
                         f"| {met} | {cell(figure.detail)} |")
    lines += ["", "## Parts", ""]
    for name, part in results.get("parts", {}).items():
        ended = part.get("status") or "no record"
        error = f": {part['error']}" if part.get("error") else ""
        lines.append(f"- **{name}**: {ended}{error} ({part.get('seconds', 0):.0f} s of a {part.get('budget_s', 0):.0f} s "
                     f"budget, measured {part.get('measured_at', '')})")
        for note in part.get("notes", []):
            lines.append(f"  - {note}")
    return "\n".join(lines) + "\n"


def result_line(results: dict) -> str:
    """``RESULT name=value ...``: parts done, targets met, and the headline figures."""
    parts = results.get("parts", {})
    figures = {figure.name: figure for part in parts.values() for figure in figures_of(part)}
    judged = [figure for figure in figures.values() if figure.met is not None]
    fields = {
        "parts_done": sum(1 for part in parts.values() if part.get("status") == DONE),
        "parts": len(parts),
        "targets_met": sum(1 for figure in judged if figure.met),
        "targets": len(judged),
    }
    for key, name in HEADLINES.items():
        value = figures.get(name).value if name in figures else None
        if isinstance(value, (int, float)):
            fields[key] = f"{value:.3f}"
    return "RESULT " + " ".join(f"{key}={value}" for key, value in fields.items())
