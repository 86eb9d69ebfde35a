"""Progress shown while long work runs, and metric logs shared by every long-running stage.

Progress is shown in the unit the user thinks in (words, stories, pairs) with a rate and an
ETA: a live bar when stderr is a terminal, otherwise a plain line at a steady interval (so a
batch job's log shows the run is alive even while nothing finishes). Inside :func:`run_log`
the same plain lines also go to the run's log file (``RUN/log.txt``). Result tables go
through :func:`print_table`, which prints them whole when the output is a file or a pipe.

Metrics go to TensorBoard under ``RUN/tensorboard`` and to ``RUN/metrics.csv`` (one row per
logged step, columns added as they appear), and to Weights & Biases when ``WANDB_PROJECT`` is
set and ``wandb`` is installed.
"""

from __future__ import annotations

import csv
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

#: Seconds between plain progress lines (``ONCEUPON_PROGRESS_INTERVAL`` overrides it).
DEFAULT_INTERVAL = 30.0

# Log files that receive progress lines and :func:`log` messages (see :func:`run_log`).
_log_paths: list[Path] = []
_log_lock = threading.Lock()


#: The log file of a run directory: every stage that works in a run appends its progress lines here.
RUN_LOG = "log.txt"


@contextmanager
def run_log(path: str | Path) -> Iterator[Path]:
    """Within this block, progress lines and :func:`log` messages are appended to ``path``
    (typically ``RUN/log.txt``), each with a UTC timestamp, whatever stderr is."""
    path = Path(path)
    _log_paths.append(path)
    try:
        yield path
    finally:
        _log_paths.remove(path)


def log(text: str, *, echo: bool = False) -> None:
    """Append one line to the active run logs (and print it on stderr with ``echo``)."""
    if echo:
        print(text, file=sys.stderr, flush=True)
    if not _log_paths:
        return
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    with _log_lock:
        for path in _log_paths:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "a", encoding="utf-8") as f:
                    f.write(f"{stamp} {text}\n")
            except OSError:
                pass  # a log that cannot be written must never stop the work it describes


def _mode() -> str:
    """"bar", "plain" or "off": ``ONCEUPON_PROGRESS`` if set, else whether stderr is a terminal."""
    setting = os.environ.get("ONCEUPON_PROGRESS", "").strip().lower()
    if setting in ("0", "off", "none", "false", "no"):
        return "off"
    if setting in ("plain", "lines", "line"):
        return "plain"
    if setting in ("bar", "1", "true", "yes", "on"):
        return "bar"
    return "bar" if os.isatty(2) else "plain"


def _interval() -> float:
    try:
        return max(0.05, float(os.environ.get("ONCEUPON_PROGRESS_INTERVAL", DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


def _count(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


class StatusColumn(ProgressColumn):
    """The task's optional status text (``status=`` in ``add_task``/``update``)."""

    def render(self, task: Task) -> Text:
        return Text(str(task.fields.get("status") or ""), style="dim")


class ProgressBar(Progress):
    """A rich :class:`~rich.progress.Progress` that can also report in plain lines.

    The API is rich's; what every caller uses::

        with progress_bar("stories") as bar:
            task = bar.add_task("rate", total=n, completed=done_before)
            bar.advance(task, 1)
            bar.update(task, completed=k, status="3 in flight, 2 retries")

    ``status`` is an optional short text shown after the ETA (on the live bar and in plain
    lines); pass it to ``add_task`` or ``update`` whenever it changes.
    """

    def __init__(self, unit: str, mode: str):
        super().__init__(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            StatusColumn(),
            disable=mode != "bar",
            transient=False,
        )
        self.unit = unit
        self.mode = mode
        self._initial: dict = {}  # task id -> completed when added (resumed work is not "rate")
        self._reported: set = set()  # tasks whose final line was written
        self._shown: set = set()  # tasks with a line on stderr
        self._stop = threading.Event()
        self._reporter: threading.Thread | None = None

    # -------------------------------------------------------------- plain lines
    def line(self, task: Task) -> str:
        """``desc: done/total unit (pct), elapsed, rate, eta, status`` for one task."""
        done = round(task.completed, 6)  # fractional advances (items of several requests) add up inexactly
        parts = [f"{task.description}: {_count(done)}"]
        if task.total:
            parts[0] += f"/{_count(task.total)} {self.unit} ({100 * done / task.total:.0f}%)"
        else:
            parts[0] += f" {self.unit}"
        elapsed = (task.finished_time if task.finished_time is not None else task.elapsed) or 0.0
        parts.append(f"{_duration(elapsed)} elapsed")
        gained = done - self._initial.get(task.id, 0)
        if elapsed > 0 and gained > 0:
            rate = gained / elapsed
            per_second = f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}"
            parts.append(f"{per_second} {self.unit}/s" if rate >= 0.1 else f"{60 * rate:.1f} {self.unit}/min")
            if task.total and done < task.total:
                parts.append(f"eta {_duration((task.total - done) / rate)}")
        status = task.fields.get("status")
        if status:
            parts.append(str(status))
        return ", ".join(parts)

    def _emit(self, tasks: list[Task], final: bool = False) -> None:
        """One line per task, to stderr (plain mode) and the run log. A task that ends
        before its first periodic line ends quietly on stderr (only the log records it), so
        a quick step followed by an error still leaves the error as the one line shown."""
        for task in tasks:
            if not task.visible or task.id in self._reported:
                continue
            ending = final or task.finished
            if ending:
                self._reported.add(task.id)
            text = self.line(task)
            if self.mode == "plain" and not (ending and task.id not in self._shown):
                print(text, file=sys.stderr, flush=True)
                self._shown.add(task.id)
            log(text)

    def _report_every(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with self._lock:
                tasks = list(self.tasks)
            self._emit(tasks)

    @property
    def _lines_wanted(self) -> bool:
        return self.mode == "plain" or bool(_log_paths)

    # -------------------------------------------------------------- rich API
    def add_task(self, description: str, *args, **kwargs):
        kwargs.setdefault("status", "")
        task_id = super().add_task(description, *args, **kwargs)
        self._initial[task_id] = self._tasks[task_id].completed
        return task_id

    def start(self) -> None:
        super().start()
        if self._lines_wanted and self._reporter is None:
            self._reporter = threading.Thread(target=self._report_every, args=(_interval(),), daemon=True)
            self._reporter.start()

    def stop(self, *, final_lines: bool = True) -> None:
        self._stop.set()
        if self._reporter is not None:
            self._reporter.join()
            self._reporter = None
        if self._lines_wanted and final_lines:
            with self._lock:
                tasks = list(self.tasks)
            self._emit(tasks, final=True)
        super().stop()

    def __exit__(self, exc_type, exc_val, exc_tb) -> None:
        # On an error or Ctrl-C the caller's own sentence is the last word, not a progress line.
        self.stop(final_lines=exc_type is None)


class _Silent(Progress):
    """Keeps the API (tasks are tracked) but shows and logs nothing."""

    def __init__(self):
        super().__init__(disable=True)


def progress_bar(unit: str, *, disable: bool | None = None) -> Progress:
    """Progress in ``unit`` s: a live bar on a terminal, plain lines otherwise.

    Use as ``with progress_bar("words") as bar: task = bar.add_task("pretrain", total=N)``,
    then ``bar.advance(task, n)`` or ``bar.update(task, completed=k)``; an optional status
    text (``bar.update(task, status="3 in flight, 2 retries")``, also accepted by
    ``add_task``) is shown after the ETA. See :class:`ProgressBar`.

    When stderr is not a terminal, a plain line ``desc: done/total unit (pct), elapsed,
    rate, eta, status`` is printed every ``ONCEUPON_PROGRESS_INTERVAL`` seconds (default 30)
    while a task runs, and once when a task that printed such a line ends (not when the block
    ends with an error, whose own message stays the last line). The run log gets every line,
    the final line of quick tasks too. ``ONCEUPON_PROGRESS`` chooses explicitly:
    ``bar``, ``plain`` or ``off``. ``disable=True`` shows and logs nothing (for example on
    all but the main process). Inside :func:`run_log` the plain lines also go to the log file.
    """
    if disable:
        return _Silent()
    mode = _mode()
    if mode == "off":
        # Nothing on stderr; the run log (if any) still gets its lines.
        return ProgressBar(unit, "log") if _log_paths else _Silent()
    return ProgressBar(unit, mode)


def print_table(table, console=None) -> None:
    """Print a rich table: on a terminal at the terminal's width; otherwise (a file, a pipe,
    a batch job's log) at the table's full width, so no cell is cut to "53…"."""
    from rich.console import Console
    from rich.measure import Measurement

    console = console or Console()
    if console.is_terminal:
        console.print(table)
        return
    width = Measurement.get(console, console.options.update(width=100_000), table).maximum
    Console(file=console.file, width=max(width, 20), soft_wrap=True).print(table)


class MetricsLogger:
    """Write scalars to TensorBoard and a CSV file in the run directory."""

    def __init__(
        self, run_dir: str | Path, csv_name: str = "metrics.csv", tensorboard: bool = True, resume_step: int | None = None
    ):
        """``resume_step``: a run resuming from the checkpoint taken after this step; rows and
        TensorBoard events logged after it (by the crashed process) are dropped, so every
        step appears once."""
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / csv_name
        if resume_step is not None:
            self.truncate_after(resume_step)
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if resume_step is None else resume_step + 1
            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge)
        self._wandb = None
        if os.environ.get("WANDB_PROJECT"):
            try:
                import wandb  # optional

                self._wandb = wandb.run or wandb.init(project=os.environ["WANDB_PROJECT"], dir=str(self.run_dir))
            except ImportError:
                pass

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if self._tb is not None:
            for key, value in metrics.items():
                if value is not None:
                    self._tb.add_scalar(key, float(value), step)
        if self._wandb is not None:
            self._wandb.log(metrics, step=step)
        self._append_csv({"step": step, **metrics})

    def _append_csv(self, row: dict) -> None:
        rows: list[dict] = []
        fields: list[str] = []
        if self.csv_path.exists():
            with open(self.csv_path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                fields = list(reader.fieldnames or [])
                if any(k not in fields for k in row):
                    rows = list(reader)
        new_fields = fields + [k for k in row if k not in fields]
        if new_fields != fields or not self.csv_path.exists():
            # A new column appeared: rewrite the file with the wider header.
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=new_fields)
                writer.writeheader()
                writer.writerows(rows)
                writer.writerow(row)
        else:
            with open(self.csv_path, "a", newline="", encoding="utf-8") as f:
                csv.DictWriter(f, fieldnames=fields).writerow(row)

    def truncate_after(self, step: int) -> None:
        """Drop CSV rows logged after ``step`` (when a run resumes from an earlier checkpoint)."""
        if not self.csv_path.exists():
            return
        with open(self.csv_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            rows = [r for r in reader if r.get("step") and int(float(r["step"])) <= step]
        with open(self.csv_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
