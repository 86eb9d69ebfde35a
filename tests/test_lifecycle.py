"""The run machinery shared by the stages (onceupon.lifecycle): RNG capture/restore, precision,
resume-state pruning, new-run and resume checks, the resume rule, the safe-stop signal handling,
the run lock; and pretraining's batch function on its own."""

from __future__ import annotations

import os
import random
import signal

import numpy as np
import pytest
import torch

from onceupon.errors import UserError
from onceupon.lifecycle import lock, precision, resume, rng, stop
from onceupon.lifecycle.checkpoints import STATE_DIR, CheckpointMeta, list_checkpoints
from onceupon.student.packing import Packed


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_restore_repeats_every_generator_and_accepts_states_without_numpy():
    state = rng.capture_rng()
    first = _draws()
    rng.restore_rng(state)
    assert _draws() == first
    # Interaction resume states written before NumPy's state was saved: the rest still restores.
    old = {k: v for k, v in state.items() if k not in ("numpy", "cuda")}
    rng.restore_rng(old)
    assert _draws()[::2] == first[::2]


def test_precision_auto_is_fp32_without_a_bf16_gpu():
    assert precision.resolve_precision("bf16") == "bf16" and precision.resolve_precision("fp32") == "fp32"
    expected = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    assert precision.resolve_precision("auto") == expected
    assert precision.mixed_precision("fp32") == "no"


def _fake_checkpoint(run, name: str, step: int, words: int):
    from onceupon.files import atomic_write_json

    path = run / "checkpoints" / name
    (path / STATE_DIR).mkdir(parents=True)
    (path / STATE_DIR / resume.RESUME_STATE).write_bytes(b"")  # a resume state (never read here)
    atomic_write_json(path / "onceupon.json", CheckpointMeta(name=name, stage="pretrain", pretrain_words=words, step=step).__dict__)
    return path


def test_pruning_keeps_the_latest_state_and_others_of_the_same_step(tmp_path):
    a = _fake_checkpoint(tmp_path, "chck_1K", 3, 1000)
    b = _fake_checkpoint(tmp_path, "chck_2K", 5, 2100)
    c = _fake_checkpoint(tmp_path, "chck_3K", 5, 2100)  # one step passed two milestones
    resume.prune_resume_states(tmp_path, b)
    assert {p.name: (p / STATE_DIR).is_dir() for p in list_checkpoints(tmp_path)} == {
        "chck_1K": False, "chck_2K": True, "chck_3K": True,
    }  # fmt: skip
    assert a.is_dir() and c.is_dir()  # only the resume state goes, never a checkpoint


def test_new_run_and_resume_checks(tmp_path):
    resume.check_new_run(tmp_path / "new", "pretrain", ["tokenizer"])  # absent: fine
    (tmp_path / "tokenizer").mkdir()
    with pytest.raises(UserError, match="already holds a pretraining run.*--resume"):
        resume.check_new_run(tmp_path, "pretrain", ["tokenizer"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        resume.check_new_run(tmp_path / "file", "pretrain", ["tokenizer"])
    with pytest.raises(UserError, match="not an interaction run to resume"):
        resume.check_resume(tmp_path, "interact", "state.json")


def test_the_kind_of_run_is_told_apart_before_anything_is_written(tmp_path):
    (tmp_path / "config.yaml").write_text("")
    (tmp_path / "anthology.jsonl").write_text("")  # an interaction run
    with pytest.raises(UserError, match="not a pretraining run to resume: it holds an interaction run"):
        resume.check_resume(tmp_path, "pretrain", "config.yaml")
    with pytest.raises(UserError, match="holds an interaction run, not a pretraining run"):
        resume.check_new_run(tmp_path, "pretrain", ["tokenizer"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anthology.jsonl", "config.yaml"]


def test_first_signal_requests_a_stop_and_the_second_aborts():
    # The handlers in force before: under nohup or in the background SIGINT is ignored, not
    # Python's default handler; stop_on_signals must put back whatever was there.
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with stop.stop_on_signals():
        assert not stop.stop_requested()
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.stop_requested() and stop.stop_exit_code() == 143
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert not stop.stop_requested()
    assert {s: signal.getsignal(s) for s in before} == before  # the old handlers are back


def test_lock_is_reentrant_in_one_process_and_leaves_nothing(tmp_path):
    run = tmp_path / "run"
    with lock.run_lock(run):
        assert (run / ".lock").read_text().strip() == str(os.getpid())
        with lock.run_lock(run):
            pass
        assert (run / ".lock").exists()
    assert not run.exists()  # created for the lock, nothing written: removed again


# --------------------------------------------------------------------------- pretraining steps
def test_batches_never_target_padding_and_mask_only_when_padded():
    from onceupon.student.pretrain import make_batch

    tokens = np.arange(1, 13, dtype=np.uint16).reshape(3, 4)
    packed = Packed(tokens=tokens, valid=np.array([4, 4, 2]), words=np.array([3, 3, 1]), documents=2)
    x, y, mask = make_batch(packed, np.array([1, 0]), torch.device("cpu"))
    assert x.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]  # sorted: memory-map order
    assert y.tolist() == [[2, 3, 4, -100], [6, 7, 8, -100]] and mask is None
    x, y, mask = make_batch(packed, np.array([2]), torch.device("cpu"))
    assert y.tolist() == [[10, -100, -100, -100]] and mask.tolist() == [[1, 1, 0, 0]]


def test_resume_point_wins_only_when_further_along(tmp_path):
    from onceupon.lifecycle.resume import RESUME_POINT, RESUME_STATE, find_resume_point

    assert find_resume_point(tmp_path) is None
    latest = _fake_checkpoint(tmp_path, "chck_1K", 3, 1000)
    assert find_resume_point(tmp_path) == latest
    stopped = tmp_path / RESUME_POINT
    (stopped / STATE_DIR).mkdir(parents=True)
    (stopped / STATE_DIR / RESUME_STATE).write_bytes(b"")
    from onceupon.files import atomic_write_json

    atomic_write_json(stopped / "onceupon.json", CheckpointMeta(name=RESUME_POINT, stage="pretrain", pretrain_words=1500, step=4).__dict__)
    assert find_resume_point(tmp_path) == stopped
    later = _fake_checkpoint(tmp_path, "chck_2K", 5, 2000)  # a checkpoint past the resume point (left behind)
    assert find_resume_point(tmp_path) == later


def test_the_resume_rule_passes_over_checkpoints_without_a_resume_state(tmp_path):
    import shutil

    from onceupon.lifecycle.resume import find_resume_point

    earlier = _fake_checkpoint(tmp_path, "chck_1K", 3, 1000)
    later = _fake_checkpoint(tmp_path, "chck_2K", 5, 2000)
    assert find_resume_point(tmp_path) == later
    shutil.rmtree(later / STATE_DIR)  # pruned, or removed by hand: nothing to resume there
    assert find_resume_point(tmp_path) == earlier
