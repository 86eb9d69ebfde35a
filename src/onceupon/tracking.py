"""Progress bars and metric logs shared by every long-running stage.

Progress is shown in the unit the user thinks in (words, stories, pairs) with an ETA.
Metrics go to TensorBoard under ``RUN/tensorboard`` and to ``RUN/metrics.csv`` (one row per
logged step, columns added as they appear), and to Weights & Biases when ``WANDB_PROJECT`` is
set and ``wandb`` is installed.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(unit: str, *, disable: bool | None = None) -> Progress:
    """A rich progress bar showing ``done/total unit`` and an ETA.

    Use as ``with progress_bar("words") as bar: task = bar.add_task("pretrain", total=N)``.
    Disabled automatically when stderr is not a terminal and ``ONCEUPON_PROGRESS`` is unset,
    so logs in CI and batch jobs stay readable.
    """
    if disable is None:
        disable = not (os.isatty(2) or os.environ.get("ONCEUPON_PROGRESS"))
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        disable=disable,
        transient=False,
    )


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
