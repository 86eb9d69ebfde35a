"""Progress is never silent: a live bar on a terminal, plain lines at a steady interval otherwise.

The scripts run as real processes with stderr piped (not a terminal), as in a batch job.
"""

import os
import subprocess
import sys
import textwrap

from onceupon.tracking import log, print_table, progress_bar, run_log

SLOW_WORK = textwrap.dedent(
    """
    import sys, time
    from onceupon.tracking import progress_bar, run_log
    with run_log(sys.argv[1]):
        with progress_bar("stories") as bar:
            task = bar.add_task("rate", total=10, completed=2)
            bar.advance(task, 1)
            bar.update(task, status="3 in flight, 2 retries")
            time.sleep(1.2)  # nothing finishes for a while: lines must keep coming
            bar.update(task, completed=10, status="0 in flight, 2 retries")
    """
)


def run_script(tmp_path, **env):
    full_env = {k: v for k, v in os.environ.items() if k != "ONCEUPON_PROGRESS"}
    full_env.update(ONCEUPON_PROGRESS_INTERVAL="0.25", **env)
    return subprocess.run(
        [sys.executable, "-c", SLOW_WORK, str(tmp_path / "log.txt")],
        capture_output=True, text=True, env=full_env, timeout=120,
    )


def test_plain_lines_at_a_steady_interval_when_not_a_terminal(tmp_path):
    proc = run_script(tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    waiting = [line for line in lines if line.startswith("rate: 3/10 stories (30%)")]
    assert len(waiting) >= 3 and lines[0] == waiting[0]  # ~1.2 s without progress, 0.25 s interval
    assert all("eta" in line and line.endswith("3 in flight, 2 retries") for line in waiting)
    assert "stories/s" in waiting[0] or "stories/min" in waiting[0]
    assert lines[-1].startswith("rate: 10/10 stories (100%)") and lines[-1].endswith("0 in flight, 2 retries")
    assert "eta" not in lines[-1] and len([line for line in lines if "10/10" in line]) == 1
    # The run log holds the same lines, each with a UTC timestamp.
    logged = (tmp_path / "log.txt").read_text().splitlines()
    assert [line[20:] for line in logged] == lines


def test_progress_off_keeps_stderr_quiet_but_still_logs(tmp_path):
    proc = run_script(tmp_path, ONCEUPON_PROGRESS="off")
    assert proc.returncode == 0 and proc.stderr == ""
    assert "rate: 10/10 stories (100%)" in (tmp_path / "log.txt").read_text()


def test_every_caller_api_works_and_disable_is_silent(tmp_path, capsys):
    with run_log(tmp_path / "log.txt"):
        with progress_bar("words", disable=True) as bar:  # e.g. every process but the main one
            task = bar.add_task("pretrain", total=100, completed=40)
            bar.advance(task, 10)
            bar.update(task, advance=5)
            bar.update(task, completed=90)
            assert bar.tasks[0].completed == 90
        log("a message for the run log")
        with progress_bar("words") as bar:
            task = bar.add_task("pretrain", total=100, completed=40)
            bar.advance(task, 10)
            bar.update(task, advance=5)
            bar.update(task, completed=100)
    assert capsys.readouterr().err == ""  # done before its first line was due
    logged = (tmp_path / "log.txt").read_text().splitlines()
    assert logged[0].endswith(" a message for the run log") and len(logged) == 2
    assert "pretrain: 100/100 words (100%), 0:00:00 elapsed" in logged[1]


def test_an_error_stays_the_last_line(capsys):
    try:
        with progress_bar("words") as bar:
            task = bar.add_task("reading", total=100)
            bar.advance(task, 50)
            raise ValueError("bad input")
    except ValueError:
        pass
    assert capsys.readouterr().err == ""  # the caller prints its one sentence; no progress line after it


def test_an_error_adds_no_progress_line_after_those_already_shown(capsys, monkeypatch):
    """The test above holds for a quick task; this one has printed lines when the error comes."""
    import time

    monkeypatch.setenv("ONCEUPON_PROGRESS", "plain")
    monkeypatch.setenv("ONCEUPON_PROGRESS_INTERVAL", "0.1")
    try:
        with progress_bar("words") as bar:
            task = bar.add_task("reading", total=100)
            bar.advance(task, 50)
            time.sleep(0.5)  # periodic lines at 50/100
            bar.advance(task, 10)
            raise ValueError("bad input")
    except ValueError:
        pass
    lines = capsys.readouterr().err.splitlines()
    assert lines and all(line.startswith("reading: 50/100 words") for line in lines)  # no final 60/100 line


def test_tables_print_whole_when_not_a_terminal(tmp_path):
    from rich.console import Console
    from rich.table import Table

    table = Table(title="results")
    for k in range(14):
        table.add_column(f"column {k}")
    table.add_row(*[f"{53.123 + k:.3f} (52.0)" for k in range(14)])
    with open(tmp_path / "out.txt", "w") as f:
        print_table(table, Console(file=f))  # a file: not a terminal, 80 columns by default
    text = (tmp_path / "out.txt").read_text()
    assert "…" not in text and all(f"{53.123 + k:.3f} (52.0)" in text for k in range(14))
