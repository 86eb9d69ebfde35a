"""``onceupon report``: one self-contained HTML page about a set of runs.

Writes ``OUT/index.html`` (figures embedded as data URIs, the story browser's data embedded
as JSON, vanilla JavaScript: it opens from ``file://`` with no server and no network),
``OUT/figures/*.png`` and ``OUT/report.json`` (every number the page shows). The directory
is built beside ``OUT`` and renamed into place, so a half-written report never looks whole.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import shutil
from importlib import resources
from pathlib import Path

from jinja2 import Environment

from onceupon import preflight
from onceupon.analysis.efficiency import format_extra, format_ratio, format_words
from onceupon.analysis.plots import draw_all
from onceupon.analysis.runs import load_runs
from onceupon.analysis.summary import summarize
from onceupon.config import ExperimentConfig, ReportConfig
from onceupon.errors import UserError
from onceupon.files import atomic_write_json, atomic_write_text, replace_dir

#: files that mark a directory as an onceupon report (safe to replace)
REPORT_FILES = ("index.html", "report.json")


def _digits(value: float) -> int:
    # Accuracies (0..100) read well with 2 decimals, small scores (Spearman, rates) need 3.
    return 2 if abs(value) >= 1 else 3


def _num(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{_digits(value)}f}"


def _signed(value) -> str:
    return "-" if value is None else f"{value:+.{_digits(value)}f}"


def _extra(value) -> str:
    if isinstance(value, str):  # "inf" / "-inf" as stored in JSON
        value = float(value)
    return format_extra(value)


def _json_for_script(data) -> str:
    """JSON that is safe inside a <script> element whatever the stories contain."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _interval_text(summary: dict) -> str:
    intervals = [r["interval"] for r in summary["equivalence"]["results"] if r.get("interval")]
    if not intervals:
        return "No bootstrap interval (report.bootstrap = 0)."
    iv = intervals[0]
    return (
        f"The interval is a {iv['confidence']:.0%} percentile bootstrap over the rated stories behind every score "
        f"({iv['resamples']} resamples); an end outside the curve is shown as such."
    )


def render_html(summary: dict, figures: list[tuple[str, Path, str]]) -> str:
    """The page; figures are embedded as base64 PNG so index.html stands alone."""
    template = resources.files("onceupon.analysis").joinpath("report.html").read_text(encoding="utf-8")
    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(words=lambda v: "-" if v is None else format_words(v), num=_num, signed=_signed, extra=_extra, ratio=format_ratio,
                       pct=lambda v: "-" if v is None else f"{100 * v:.0f} %")
    embedded = [
        {"name": name, "caption": caption, "src": "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()}
        for name, path, caption in figures
    ]
    return env.from_string(template).render(
        s=summary,
        interval_text=_interval_text(summary),
        figures=embedded,
        browser_json=_json_for_script(summary["browser"]),
        generated=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
    )


def _clean_json(data):
    """Replace non-finite floats (which JSON cannot hold) by strings."""
    if isinstance(data, float) and not math.isfinite(data):
        return "inf" if data > 0 else ("-inf" if data < 0 else "nan")
    if isinstance(data, dict):
        return {k: _clean_json(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_clean_json(v) for v in data]
    return data


def write_report(summary: dict, out: Path, dpi: int = 110) -> Path:
    """Draw the figures and write index.html + report.json into ``out`` atomically."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not any((out / f).exists() for f in REPORT_FILES))):
        raise UserError(f"{out} exists and is not an onceupon report; choose another --out.")
    summary = _clean_json(summary)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        figures = draw_all(summary, tmp / "figures", dpi=dpi)
        atomic_write_json(tmp / "report.json", summary)
        atomic_write_text(tmp / "index.html", render_html(summary, figures))
        for name in REPORT_FILES:  # temporary files are created private; a report is for sharing
            (tmp / name).chmod(0o644)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"


def build(
    cfg: ReportConfig,
    runs: list[Path],
    out: Path,
    title: str = "onceupon",
    checks: list[Path] | None = None,
    agreements: list[Path] | None = None,
) -> tuple[Path, dict]:
    """Load the runs (and teacher checks), compute the summary, write the report; returns
    (index.html, summary)."""
    from onceupon.annotate.agreement import read_agreement
    from onceupon.teacher.check_teacher import read_check

    found = [read_check(c) | {"path": str(c)} for c in checks or []]  # bad input fails before any work
    people = [read_agreement(a) for a in agreements or []]  # teacher vs people, from `rate --compare`
    loaded = load_runs(runs, shown=cfg.stories_shown, seed=cfg.seed)
    summary = summarize(cfg, loaded, title=title, checks=found) | {"human_agreement": people}
    return write_report(summary, out, dpi=cfg.dpi), summary


def run(
    cfg: ExperimentConfig | None, runs: list[Path], out: Path, checks: list[Path] | None = None, agreements: list[Path] | None = None
) -> Path:
    """The ``onceupon report`` command: write the report and print where it is and the headline."""
    cfg = cfg or ExperimentConfig()
    preflight.output_dir(out)  # before the runs are read: a bad --out is told at once
    index, summary = build(cfg.report, list(runs), Path(out), title=cfg.name, checks=checks, agreements=agreements)
    print(f"report: {index}")
    head = summary.get("headline")
    print(f"headline: {head['text']}" if head else "headline: none (the equivalence needs an interaction run "
          "and at least two pretraining points with story scores)")
    for check in summary["teacher_checks"]:
        of_run = f" of {check['run']}" + (f" ({check['set']})" if check.get("set") else "") if check.get("run") else ""
        print(f"teacher check{of_run}: {check['verdict']['text']}")
    for warning in summary["warnings"]:
        print(f"note: {warning}")
    return index
