"""The report's figures, drawn from the summary dictionary (summary.py) as PNG files.

Figures are built as bare ``matplotlib.figure.Figure`` objects (Agg canvas, no pyplot), so
drawing needs no display and leaves no global state behind. Each ``plot_*`` function returns
the file it wrote, or None when the runs hold no data for it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from onceupon.analysis.efficiency import format_words
from onceupon.analysis.summary import METRIC_LABELS, task_value

_WORDS = FuncFormatter(lambda x, _pos: format_words(x) if x > 0 else "0")


def _log_words(ax) -> None:
    """A log x axis of words labelled 1K, 2K, 5K, 10K, ... (no crowded minor labels)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(_WORDS)
    ax.xaxis.set_minor_formatter(NullFormatter())


def _grid(n: int, width: float = 4.2, height: float = 3.2) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows))
    # Fixed margins in inches: a layout engine would redraw every figure to measure it.
    fig.subplots_adjust(
        left=0.6 / (width * cols), right=1 - 0.15 / (width * cols),
        bottom=0.55 / (height * rows), top=1 - 0.75 / (height * rows),
        wspace=0.28, hspace=0.5,
    )
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n)]
    return fig, axes


def _save(fig: Figure, path: Path, dpi: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _by_run(points: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in points:
        out.setdefault(p["run"], []).append(p)
    return out


def _story_metric(point: dict, key: str) -> float | None:
    s = point.get("stories") or {}
    return s.get("mean_total") if key == "total" else (s.get("criteria") or {}).get(key)


def _task_metric(point: dict, task: str) -> float | None:
    return task_value((point.get("tasks") or {}).get(task))[1]


def _task_label(summary: dict, task: str) -> str:
    for p in summary["pretrain_points"] + [q for i in summary["interaction"] for q in i["points"]]:
        metric = task_value((p.get("tasks") or {}).get(task))[0]
        if metric:
            return f"{task} ({METRIC_LABELS[metric]})"
    return f"{task} (accuracy %)"


def _xy(points: list[dict], x: str, value) -> tuple[list, list]:
    """``(p[x], value(p))`` of the points that have a value, as two lists for ``ax.plot``."""
    pairs = [(p[x], v) for p in points if (v := value(p)) is not None]
    return [a for a, _ in pairs], [b for _, b in pairs]


#: x axis of the curve figures: label, log scale, legend size
_X_AXES = {
    "pretrain_words": ("pretraining words", True, 8),
    "interact_words": ("interaction words (input)", False, 7),
}


def _curve_panels(keys: list[str], x: str, draw, suptitle: str, path: Path, dpi: int) -> Path:
    """One panel per key: ``draw(ax, key)`` draws its lines and title; the words axis, grid,
    legend and figure title are shared by every curve figure."""
    xlabel, log, legend_size = _X_AXES[x]
    fig, axes = _grid(len(keys))
    for ax, key in zip(axes, keys):
        draw(ax, key)
        if log:
            _log_words(ax)
        else:
            ax.xaxis.set_major_formatter(_WORDS)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=legend_size)
    fig.suptitle(suptitle)
    return _save(fig, path, dpi)


def _story_title(key: str) -> str:
    return "mean total" if key == "total" else key


# --------------------------------------------------------------------------- pretraining curves
def plot_pretrain_stories(summary: dict, path: Path, dpi: int) -> Path | None:
    """Story score (total and each criterion) against pretraining words, log axis."""
    runs = _by_run([p for p in summary["pretrain_points"] if p["stories"] and p["pretrain_words"] > 0])
    if not runs:
        return None

    def draw(ax, key):
        for name, pts in runs.items():
            ax.plot(*_xy(pts, "pretrain_words", lambda p: _story_metric(p, key)), "o-", label=name)
        ax.set_title(_story_title(key))

    keys = ["total", *summary["criteria"]]
    return _curve_panels(keys, "pretrain_words", draw, "Teacher score of sampled stories vs pretraining words",
                         path, dpi)


def plot_pretrain_tasks(summary: dict, path: Path, dpi: int) -> Path | None:
    """Zero-shot task scores against pretraining words, log axis."""
    tasks = summary["tasks"]
    runs = _by_run([p for p in summary["pretrain_points"] if p["pretrain_words"] > 0])
    if not tasks or not runs:
        return None

    def draw(ax, task):
        for name, pts in runs.items():
            ax.plot(*_xy(pts, "pretrain_words", lambda p: _task_metric(p, task)), "o-", label=name)
        ax.set_title(_task_label(summary, task), fontsize=10)

    return _curve_panels(tasks, "pretrain_words", draw, "Zero-shot evaluation vs pretraining words", path, dpi)


# --------------------------------------------------------------------------- interaction curves
def _run_label(item: dict) -> str:
    return f"{item['run']} (from {item['start']})" if item.get("start") else item["run"]


def _smooth(values: list[float | None], window: int) -> np.ndarray:
    v = np.array([np.nan if x is None else x for x in values], dtype=float)
    if window <= 1 or len(v) < window:
        return v
    out = np.full_like(v, np.nan)
    for i in range(len(v)):
        chunk = v[max(0, i - window + 1) : i + 1]
        out[i] = np.nanmean(chunk) if np.isfinite(chunk).any() else np.nan
    return out


def plot_interaction_stories(summary: dict, path: Path, dpi: int) -> Path | None:
    """Teacher score against interaction words, one line per starting checkpoint.

    Thin lines: the anthology's per-step mean (smoothed over up to 10 steps); markers: the
    evaluated checkpoints (``onceupon evaluate``)."""
    items = [i for i in summary["interaction"] if i["steps"] or any(p["stories"] for p in i["points"])]
    if not items:
        return None

    def draw(ax, key):
        for i, item in enumerate(items):
            color = f"C{i % 10}"
            steps = item["steps"]
            if steps:
                values = [s["total"] if key == "total" else s["criteria"].get(key) for s in steps]
                window = max(1, min(10, len(steps) // 5))
                ax.plot([s["input_words"] for s in steps], _smooth(values, window), "-", color=color, lw=1,
                        alpha=0.8, label=_run_label(item) + " anthology")
            xs, ys = _xy(item["points"], "interact_words", lambda p: _story_metric(p, key))
            if xs:
                ax.plot(xs, ys, "o--", color=color, label=_run_label(item) + " evaluated")
        ax.set_title(_story_title(key))

    keys = ["total", *summary["criteria"]]
    return _curve_panels(keys, "interact_words", draw, "Teacher score vs interaction words, per starting checkpoint",
                         path, dpi)


def plot_interaction_tasks(summary: dict, path: Path, dpi: int) -> Path | None:
    """Zero-shot task scores against interaction words, one line per starting checkpoint."""
    tasks = summary["tasks"]
    items = [i for i in summary["interaction"] if i["points"]]
    if not tasks or not items:
        return None

    def draw(ax, task):
        for item in items:
            ax.plot(*_xy(item["points"], "interact_words", lambda p: _task_metric(p, task)), "o-",
                    label=_run_label(item))
        ax.set_title(_task_label(summary, task), fontsize=10)

    return _curve_panels(tasks, "interact_words", draw, "Zero-shot evaluation vs interaction words", path, dpi)


# --------------------------------------------------------------------------- equivalence
def plot_equivalence(summary: dict, path: Path, dpi: int) -> Path | None:
    """The pretraining curve (points and monotone fit, log words) and, for each interaction
    run, an arrow from its start checkpoint to the pretraining words its final score is worth,
    with the bootstrap interval as an error bar. Scores outside the curve get an arrow that
    stops at the curve's end, marked with '<' or '>'."""
    eq = summary["equivalence"]
    if not eq["results"]:
        return None
    fig = Figure(figsize=(8, 5))
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.11, top=0.93)
    ax = fig.add_subplot(1, 1, 1)
    drawn: set[str] = set()
    for i, res in enumerate(eq["results"]):
        curve = eq["curves"][res["run"]]
        key = str(curve["words"]) + str(curve["scores"])
        if key not in drawn:  # runs sharing a curve draw it once
            drawn.add(key)
            ax.plot(curve["words"], curve["scores"], "o", color="0.3", label="pretraining checkpoints" if i == 0 else None)
            ax.plot(curve["words"], curve["fitted"], "-", color="0.5", lw=1, label="monotone fit" if i == 0 else None)
        color = f"C{i % 10}"
        y = res["final_score"]
        start_y = res["start_score"] if res["start_score"] is not None else y
        ax.plot([res["start_words"]], [start_y], "s", color=color, ms=7)
        if res["position"] == "inside":
            end, marker = res["needed_words"], "*"
            label = f"{res['run']}: from {res['start_checkpoint']} ~ {format_words(res['needed_words'])}"
        else:
            end, marker = res["bound"], "<" if res["position"] == "below" else ">"
            label = f"{res['run']}: from {res['start_checkpoint']} {marker} {format_words(res['bound'])}"
        ax.annotate("", xy=(end, y), xytext=(res["start_words"], start_y),
                    arrowprops={"arrowstyle": "->", "color": color, "lw": 1.5})
        ax.plot([end], [y], marker, color=color, ms=11, label=label)
        iv = res.get("interval")
        if iv:
            lo = 10 ** float(iv["log10_low"]) if iv["log10_low"] != "-inf" else curve["words"][0]
            hi = 10 ** float(iv["log10_high"]) if iv["log10_high"] != "inf" else curve["words"][-1]
            ax.plot([lo, hi], [y, y], "|-", color=color, lw=3, alpha=0.5)
    _log_words(ax)
    ax.set_xlabel("pretraining words")
    ax.set_ylabel(eq["results"][0]["score"])
    ax.set_title("What the interaction was worth in pretraining words")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path, dpi)


# --------------------------------------------------------------------------- training metrics
#: metrics.csv columns worth a panel, in order of preference (names written by pretrain and interact)
PREFERRED_METRICS = ("loss", "reward/mean", "score/total", "kl", "entropy/per_word", "words/continuation", "grad_norm")
#: counters and timings: straight lines that say nothing about learning
_SKIPPED = ("time/", "budget/", "perf/", "words_seen", "learning_rate", "epoch", "tokens_per_s", "input_words")


def pick_metrics(columns: list[str], most: int) -> list[str]:
    """The preferred learning signals among a metrics.csv's columns, else its first columns."""
    columns = [c for c in columns if c != "step"]
    chosen = [c for want in PREFERRED_METRICS for c in columns if c == want]
    if not chosen:
        chosen = [c for c in columns if not any(c.startswith(k) or k in c for k in _SKIPPED)]
    return chosen[:most]


def plot_metrics(summary: dict, path: Path, dpi: int, per_run: int = 3) -> Path | None:
    """A few learning signals of each run's metrics.csv (loss; reward, score, KL) against step."""
    panels = []
    for name, rows in summary["metrics"].items():
        columns = list(dict.fromkeys(k for r in rows for k in r))
        for col in pick_metrics(columns, per_run):
            panels.append((name, col, rows))
    if not panels:
        return None
    fig, axes = _grid(len(panels), width=3.6, height=2.6)
    for ax, (name, col, rows) in zip(axes, panels):
        pts = [(r["step"], r[col]) for r in rows if "step" in r and col in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", lw=1)
        ax.set_title(f"{name}: {col}", fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.suptitle("Training metrics (metrics.csv)")
    return _save(fig, path, dpi)


def plot_watch(summary: dict, path: Path, dpi: int) -> Path | None:
    """Per interaction run with a watch: the teacher and the held-out judge on the same
    stories, the share addressing the listener, and diversity; alarms as red lines."""
    panels = summary.get("watch") or []
    if not panels:
        return None
    fig, axes = _grid(3 * len(panels), width=3.8, height=2.7)
    for k, p in enumerate(panels):
        ax_judges, ax_address, ax_diverse = axes[3 * k : 3 * k + 3]
        steps = p["steps"]
        judged = [s for s in steps if s["teacher"] is not None and s["heldout"] is not None]
        if judged:
            x = [s["step"] for s in judged]
            ax_judges.plot(x, [s["teacher"] for s in judged], "-", lw=1.2, label="teacher")
            ax_judges.plot(x, [s["heldout"] for s in judged], "-", lw=1.2, label=f"held-out ({p['judge']})")
            ax_judges.legend(fontsize=7)
        else:
            ax_judges.text(0.5, 0.5, "no held-out judge", ha="center", va="center", transform=ax_judges.transAxes, fontsize=8)
        ax_judges.set_title(f"{p['run']}: score on the same stories", fontsize=9)
        x = [s["step"] for s in steps]
        ax_address.plot(x, [s["address"] for s in steps], "-", lw=1.2, label="address the listener")
        ax_address.plot(x, [s["at_length_cap"] for s in steps], "-", lw=1, label="at the length cap")
        ax_address.plot(x, [s["invalid"] for s in steps], "-", lw=1, label="invalid answers")
        ax_address.set_title(f"{p['run']}: share of stories", fontsize=9)
        ax_address.legend(fontsize=7)
        ax_diverse.plot(x, [s["distinct2"] for s in steps], "-", lw=1.2, label="distinct bigrams")
        ax_diverse.plot(x, [s["repetition"] for s in steps], "-", lw=1, label="repeated trigrams")
        ax_diverse.set_title(f"{p['run']}: diversity", fontsize=9)
        ax_diverse.legend(fontsize=7)
        for ax in (ax_judges, ax_address, ax_diverse):
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            for alarm in p["alarms"]:
                ax.axvline(alarm["step"], color="red", lw=1, ls="--")
    fig.suptitle("Was the teacher gamed? The watch (red: an alarm)")
    return _save(fig, path, dpi)


#: (file name, function, caption) of every figure, in the order the report shows them
FIGURES = [
    ("equivalence.png", plot_equivalence, "Data-efficiency equivalence"),
    ("pretrain_stories.png", plot_pretrain_stories, "Story score vs pretraining words"),
    ("pretrain_tasks.png", plot_pretrain_tasks, "Zero-shot tasks vs pretraining words"),
    ("interaction_stories.png", plot_interaction_stories, "Story score vs interaction words"),
    ("interaction_tasks.png", plot_interaction_tasks, "Zero-shot tasks vs interaction words"),
    ("metrics.png", plot_metrics, "Training metrics"),
    ("watch.png", plot_watch, "The watch: teacher vs held-out judge, drift signals"),
]


def draw_all(summary: dict, out_dir: Path, dpi: int = 110) -> list[tuple[str, Path, str]]:
    """Draw every figure the data allows; returns (name, path, caption) of those written."""
    written = []
    for name, fn, caption in FIGURES:
        path = fn(summary, out_dir / name, dpi)
        if path is not None:
            written.append((name, path, caption))
    return written
