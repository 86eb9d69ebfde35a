"""Outputs are plain files or directories: every command refuses an output path that is a
device, a FIFO, a socket, a symlink loop or a symlink to nothing (or lies under one, or under
a file) with one sentence, before any work, and leaves that path exactly as it was: never
written through, never replaced.

The commands run in this process (``onceupon.cli.app``: a :class:`UserError` is what the
command line turns into ``error: ...`` and exit code 2); one kind of bad path per command also
runs as a real subprocess. A property test builds random chains of paths and checks the one
place every command uses (``preflight.output_file``/``output_dir``): it either refuses in one
sentence and changes nothing, or the output can really be made there.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import assert_one_sentence, run_cli

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")


# --------------------------------------------------------------------------- bad paths
def make(kind: str, path: Path, stack: ExitStack) -> str:
    """Make ``kind`` at ``path``; returns the words the refusal must hold."""
    if kind == "device":
        if os.geteuid() == 0:  # a device node of our own (the null device's numbers), never /dev/null itself
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        else:  # an unprivileged user could not replace /dev/null even if onceupon tried
            path.symlink_to("/dev/null")
        return "character device"
    if kind == "fifo":
        os.mkfifo(path)
        # held open for reading and writing, so code that wrongly opens it does not block forever
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        stack.callback(os.close, fd)
        return "named pipe"
    if kind == "socket":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        stack.callback(sock.close)
        return "socket"
    if kind == "loop":
        path.symlink_to(path.with_name(path.name + "-other"))
        path.with_name(path.name + "-other").symlink_to(path)
        return "symlink loop"
    if kind == "dangling":
        path.symlink_to(path.with_name("nowhere"))
        return "does not exist"
    if kind == "under a file":
        path.write_text("precious\n")
        return "is a file, not a directory"
    raise AssertionError(kind)


def snapshot(directory: Path) -> dict:
    """Every entry under ``directory``: its type, link target, and a file's size and time."""
    seen = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            p = Path(root, name)
            st_ = os.lstat(p)
            regular = stat.S_ISREG(st_.st_mode)  # (a directory's time moves with the writability probe)
            seen[str(p.relative_to(directory))] = (stat.S_IFMT(st_.st_mode), os.readlink(p) if p.is_symlink() else None,
                                                   st_.st_size if regular else None, st_.st_mtime_ns if regular else None)
    return seen


def nothing_came_out_of_the_fifo(path: Path) -> None:
    if path.exists() and stat.S_ISFIFO(os.stat(path).st_mode):
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            assert os.read(fd, 100) == b"", "something was written into the FIFO"
        except BlockingIOError:
            pass
        finally:
            os.close(fd)


# --------------------------------------------------------------------------- every command
def stories_file(tmp: Path) -> Path:
    path = tmp / "stories.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "continuation": f"a fox found box {i}."}) + "\n" for i in range(3)))
    return path


def checkpoint(tmp: Path) -> str:
    """A checkpoint directory to start from or evaluate (the output is refused before it is
    read, so an empty one does)."""
    (tmp / "chck_1K").mkdir(exist_ok=True)
    (tmp / "chck_1K" / "config.json").write_text('{"model_type": "gpt2"}')
    return str(tmp / "chck_1K")


def busy_port(stack: ExitStack) -> str:
    """A port already in use: should a bad --out slip through, annotate stops at the port
    instead of serving forever."""
    sock = stack.enter_context(socket.socket())
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return str(sock.getsockname()[1])


#: command -> (is its output a file?, its arguments for an output OUT in a directory TMP)
COMMANDS = {
    "corpus": (False, lambda out, tmp, stack: ["corpus", "--out", out, "--config", TINY]),
    "pretrain": (False, lambda out, tmp, stack: ["pretrain", "--out", out, "--config", TINY]),
    "interact": (False, lambda out, tmp, stack: ["interact", "--from", checkpoint(tmp), "--out", out, "--config", TINY]),
    "rate": (True, lambda out, tmp, stack: ["rate", str(stories_file(tmp)), "--out", out, "--config", TINY]),
    "annotate": (True, lambda out, tmp, stack: ["annotate", str(stories_file(tmp)), "--out", out, "--port", busy_port(stack)]),
    "check-teacher": (False, lambda out, tmp, stack: ["check-teacher", "--out", out, "--config", TINY]),
    "evaluate": (False, lambda out, tmp, stack: ["evaluate", checkpoint(tmp), "--out", out, "--config", TINY]),
    "report": (False, lambda out, tmp, stack: ["report", str(tmp / "run"), "--out", out]),
    "demo": (False, lambda out, tmp, stack: ["demo", "--out", out]),
}
KINDS = ["device", "fifo", "socket", "loop", "dangling", "under a file"]


def in_process(args: list[str]) -> str:
    """Run ``onceupon ARGS`` in this process; returns the UserError's sentence."""
    from onceupon.cli import app
    from onceupon.errors import UserError

    with pytest.raises(UserError) as refused:
        app(args, standalone_mode=False)
    return str(refused.value)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_an_output_that_is_not_a_plain_file_or_directory(command, kind, tmp_path):
    _, arguments = COMMANDS[command]
    bad = tmp_path / "bad"
    with ExitStack() as stack:
        needle = make(kind, bad, stack)
        out = bad / "out" if kind == "under a file" else bad
        args = arguments(str(out), tmp_path, stack)  # (makes the command's inputs)
        before = snapshot(tmp_path)
        sentence = in_process(args)
        assert needle in sentence and str(out) in sentence and "\n" not in sentence, sentence
        assert snapshot(tmp_path) == before  # nothing written through, replaced or made beside it
        nothing_came_out_of_the_fifo(bad)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["dangling", "loop", "fifo", "device"])
@pytest.mark.parametrize("command", ["rate", "report"])  # one file output, one directory output
def test_an_output_under_an_odd_path_is_refused(command, kind, tmp_path):
    _, arguments = COMMANDS[command]
    with ExitStack() as stack:
        needle = make(kind, tmp_path / "bad", stack)
        out = tmp_path / "bad" / "deeper" / "out"
        args = arguments(str(out), tmp_path, stack)
        before = snapshot(tmp_path)
        sentence = in_process(args)
        assert "cannot be created" in sentence and needle in sentence and str(tmp_path / "bad") in sentence, sentence
        assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", ["device", "dangling"])
def test_as_a_real_command_it_is_one_sentence_and_exit_2(kind, tmp_path):
    """`rate --out` on a device replaced the device node with a file; on a dangling symlink it
    replaced the link."""
    with ExitStack() as stack:
        needle = make(kind, tmp_path / "out.jsonl", stack)
        before = snapshot(tmp_path)
        result = run_cli("rate", str(stories_file(tmp_path)), "--out", str(tmp_path / "out.jsonl"), "--config", TINY)
        assert_one_sentence(result, needle, "left as it is")
        assert {k: v for k, v in snapshot(tmp_path).items() if k != "stories.jsonl"} == {
            k: v for k, v in before.items() if k != "stories.jsonl"}


def test_symlinks_to_plain_files_and_directories_are_still_fine(tmp_path):
    """A run directory on another disk, reached through a link, is an ordinary choice."""
    from onceupon import preflight

    (tmp_path / "disk").mkdir()
    (tmp_path / "runs").symlink_to(tmp_path / "disk")
    (tmp_path / "old.jsonl").write_text("")
    (tmp_path / "ratings.jsonl").symlink_to(tmp_path / "old.jsonl")
    preflight.output_dir(tmp_path / "runs")
    preflight.output_dir(tmp_path / "runs" / "new" / "deeper")
    preflight.output_file(tmp_path / "ratings.jsonl")
    preflight.output_file(tmp_path / "runs" / "human.jsonl")


def test_a_name_too_long_is_one_sentence(tmp_path):
    from onceupon import preflight
    from onceupon.errors import UserError

    for check in (preflight.output_file, preflight.output_dir):
        with pytest.raises(UserError, match="too long"):
            check(tmp_path / ("x" * 300))


# --------------------------------------------------------------------------- the one place, as a property
PARTS = ["dir", "file", "fifo", "socket", "dangling", "loop", "link to dir", "link to file", "missing"]


def build_chain(root: Path, parts: list[str], stack: ExitStack) -> Path:
    """root/p0/p1/...: each part made as its kind while its parent is a real directory;
    below anything else the rest of the path is only names."""
    path, parent_is_dir = root, True
    for i, kind in enumerate(parts):
        path = path / f"p{i}"
        if not parent_is_dir or kind == "missing":
            parent_is_dir = False
            continue
        if kind == "dir":
            path.mkdir()
        elif kind == "file":
            path.write_text("x")
        elif kind == "link to dir":
            (root / f"target{i}").mkdir()
            path.symlink_to(root / f"target{i}")
        elif kind == "link to file":
            (root / f"target{i}").write_text("x")
            path.symlink_to(root / f"target{i}")
        else:
            make({"dangling": "dangling", "loop": "loop", "fifo": "fifo", "socket": "socket"}[kind], path, stack)
        parent_is_dir = kind in ("dir", "link to dir")
    return path


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(PARTS), min_size=1, max_size=4), want_file=st.booleans())
def test_an_output_path_is_refused_in_one_sentence_or_can_really_be_made(parts, want_file):
    from onceupon import preflight
    from onceupon.errors import UserError

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        root = Path(tmp)
        out = build_chain(root, parts, stack)
        before = snapshot(root)
        try:
            (preflight.output_file if want_file else preflight.output_dir)(out)
        except UserError as e:
            assert "\n" not in str(e) and str(e).endswith(".")
            assert snapshot(root) == before
            return
        assert snapshot(root) == before
        # accepted: so the output can be made, as a plain file or directory
        if want_file:
            out.parent.mkdir(parents=True, exist_ok=True)
            with open(out, "a") as f:
                f.write("ok")
            assert stat.S_ISREG(os.stat(out).st_mode)
        else:
            out.mkdir(parents=True, exist_ok=True)
            assert out.is_dir()
