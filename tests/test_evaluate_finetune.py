"""GLUE fine-tuning machinery on a tiny task in the official file layout.

A made-up RTE (``glue_filtered/rte.train.jsonl`` / ``rte.valid.jsonl``) whose label is
readable from the last word of the second sentence: the fine-tuned tiny checkpoint must learn
it, write its predictions in the official format, give the same predictions for the same
seed, and, reading the first token as the official script's default does, see every input as
the same (one answer for all).
"""

import json
import random
import shutil
from pathlib import Path

import pytest
from conftest import assert_one_sentence

from onceupon.errors import UserError
from onceupon.evaluate.finetune import Hyper, cosine_with_warmup, finetune, metric, run

WORDS = ["fox", "bear", "box", "hat", "key", "river", "tree", "girl", "king", "cat"]


def write_rte(root, n_train=64, n_valid=24, seed=0):
    rng = random.Random(seed)
    folder = root / "glue_filtered"
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("valid", n_valid)):
        rows = []
        for _ in range(n):
            label = rng.randrange(2)
            s1 = "The " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7))) + "."
            rows.append({"sentence1": s1, "sentence2": f"The {rng.choice(WORDS)} is {'there' if label else 'gone'}", "label": label, "idx": len(rows)})
        (folder / f"rte.{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return root


def test_finetune_learns_and_writes_official_predictions(tiny_checkpoint, tmp_path):
    root = write_rte(tmp_path / "full_eval")
    hyper = Hyper(learning_rate=1e-3, epochs=4)
    result = finetune(tiny_checkpoint, "rte", root, tmp_path / "a", hyper)
    preds = json.loads((tmp_path / "a" / "predictions.json").read_text())
    assert list(preds) == ["rte"] and [p["id"] for p in preds["rte"]["predictions"]] == [f"rte_{i}" for i in range(24)]
    labels = [json.loads(x)["label"] for x in (root / "glue_filtered" / "rte.valid.jsonl").read_text().splitlines()]
    assert result["accuracy"] == metric("accuracy", [p["pred"] for p in preds["rte"]["predictions"]], labels)
    assert result["accuracy"] >= 0.9 and result["best"] == max(result["per_epoch"]) and result["steps"] == 4 * 2

    short = Hyper(learning_rate=1e-3, epochs=1)
    once = [finetune(tiny_checkpoint, "rte", root, tmp_path / d, short) for d in ("b", "c")]
    assert (tmp_path / "b" / "predictions.json").read_bytes() == (tmp_path / "c" / "predictions.json").read_bytes()
    assert once[0]["per_epoch"] == once[1]["per_epoch"]  # the same seed, the same run

    first = finetune(tiny_checkpoint, "rte", root, tmp_path / "d", Hyper(learning_rate=1e-3, epochs=2, pooling="first"))
    answers = {p["pred"] for p in json.loads((tmp_path / "d" / "predictions.json").read_text())["rte"]["predictions"]}
    assert len(answers) == 1 and first["accuracy"] < 0.9  # the first token of a causal model sees no input


def test_schedule_and_metrics_are_the_official_ones():
    f = cosine_with_warmup(6, 100, 0.1)
    assert [f(0), f(3), f(6)] == [0.0, 0.5, 1.0]
    assert f(100) == pytest.approx(0.1) and f(53) == pytest.approx(0.1 + 0.9 * 0.5)
    assert metric("f1", [1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert metric("f1", [0, 0], [1, 0]) == 0.0


def test_missing_glue_files_are_one_sentence(tiny_checkpoint, tmp_path):
    with pytest.raises(UserError, match="rte.train.jsonl"):
        finetune(tiny_checkpoint, "rte", tmp_path, tmp_path / "out")


def test_bad_finetune_requests_are_one_sentence_before_any_directory(tiny_checkpoint, tmp_path):
    root = write_rte(tmp_path / "data" / "full_eval")
    out = tmp_path / "out"
    for args, needle in (
        ((tiny_checkpoint, tmp_path / "nope", out, ["rte"]), "holds no glue_filtered/"),
        ((tmp_path, root, out, ["rte"]), "is not a checkpoint"),
        ((tiny_checkpoint, root, out, []), "--tasks names no task"),
        ((tiny_checkpoint, root, out, ["mnli"]), "No mnli.train.jsonl"),
        ((tiny_checkpoint, root, Path("/proc/onceupon_out"), ["rte"]), "not writable"),
    ):
        with pytest.raises(UserError, match=needle) as e:
            run(*args)
        assert "\n" not in str(e.value)
        assert not out.exists()
    torn = tmp_path / "torn"  # a checkpoint cut short in copying: its weights file's header says so
    shutil.copytree(tiny_checkpoint, torn)
    with open(torn / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(UserError, match="model.safetensors cannot be read"):
        run(torn, root, out, ["rte"])
    assert not out.exists()


CHILD = r"""
import os, signal, sys
from pathlib import Path
from onceupon.evaluate.finetune import Hyper, finetune
from onceupon.lifecycle.stop import Stopped

checkpoint, root, out, when, how = sys.argv[1:6]

def progress(task, step, total):
    print(f"step {step}", flush=True)
    if step == int(when):  # a real signal to this very process, at a known step
        os.kill(os.getpid(), getattr(signal, how))

try:
    finetune(Path(checkpoint), "rte", Path(root), Path(out), Hyper(learning_rate=1e-3, epochs=3), progress=progress, save_every=0)
except Stopped as e:  # as the CLI reports it
    print(e, file=sys.stderr)
    sys.exit(e.exit_code)
"""


@pytest.mark.slow
def test_a_killed_fine_tuning_resumes_where_it_was_and_ends_as_an_uninterrupted_one(tiny_checkpoint, tmp_path):
    """kill -9 in the first epoch, SIGTERM in the second: the state saved after each step
    (save_every=0) carries the run on, and the result is the uninterrupted run's to the last
    bit (training losses, validation scores, predictions)."""
    import subprocess
    import sys

    root = write_rte(tmp_path / "full_eval", n_train=96)
    hyper = Hyper(learning_rate=1e-3, epochs=3)  # 3 steps an epoch, 9 in all
    whole = finetune(tiny_checkpoint, "rte", root, tmp_path / "whole", hyper)

    out = tmp_path / "killed"
    args = [sys.executable, "-c", CHILD, str(tiny_checkpoint), str(root), str(out)]
    killed = subprocess.run([*args, "2", "SIGKILL"], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9 and killed.stdout.split() == ["step", "0", "step", "1", "step", "2"]
    assert (out / "resume_point" / "trainer_state" / "state.pt").is_file() and not (out / "results.json").exists()
    termed = subprocess.run([*args, "4", "SIGTERM"], capture_output=True, text=True, timeout=300)
    assert termed.returncode == 143, termed.stderr
    assert termed.stdout.split() == ["step", "2", "step", "3", "step", "4", "step", "5"]  # from step 2 on; stops after the step under way
    assert f"stopped fine-tuning rte after step 5 of 9, progress saved in {out / 'resume_point'}; run the same command again" in termed.stderr

    resumed = finetune(tiny_checkpoint, "rte", root, out, hyper)
    assert resumed["train_loss"] == whole["train_loss"] and resumed["per_epoch"] == whole["per_epoch"]
    assert (out / "predictions.json").read_bytes() == (tmp_path / "whole" / "predictions.json").read_bytes()
    assert not (out / "resume_point").exists()  # done: the state is gone


def test_a_resume_state_of_other_settings_is_not_continued(tiny_checkpoint, tmp_path):
    root = write_rte(tmp_path / "full_eval")
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        def stop_at_first(task, step, total):
            if step == 1:
                raise SystemExit  # leaves the state saved after step 1
        finetune(tiny_checkpoint, "rte", root, out, Hyper(learning_rate=1e-3, epochs=2), progress=stop_at_first, save_every=0)
    assert (out / "resume_point").is_dir()
    other = Hyper(learning_rate=1e-3, epochs=1)
    steps = []
    finetune(tiny_checkpoint, "rte", root, out, other, progress=lambda t, s, n: steps.append(s))
    assert steps == list(range(3)) and not (out / "resume_point").exists()  # trained from the start, and done


def test_every_line_of_the_glue_files_is_checked_before_any_work(tiny_checkpoint, tmp_path):
    """A GLUE file that is not UTF-8 or has a torn line is one sentence before anything is
    loaded or made (before, plan_steps raised UnicodeDecodeError)."""
    from onceupon.evaluate.finetune import run

    root = write_rte(tmp_path / "full_eval")
    out = tmp_path / "out"
    train = root / "glue_filtered" / "rte.train.jsonl"
    good = train.read_bytes()
    train.write_bytes(good + b'{"sentence1": "caf\xe9", "sentence2": "x", "label": 0}\n')
    with pytest.raises(UserError, match="rte.train.jsonl is not valid UTF-8"):
        run(tiny_checkpoint, tmp_path, out, ["rte"])
    train.write_bytes(good + b'{"sentence1": "The fox')
    with pytest.raises(UserError, match="rte.train.jsonl, line 65: not valid JSON"):
        run(tiny_checkpoint, tmp_path, out, ["rte"])
    with pytest.raises(UserError, match="Unknown GLUE task cola"):
        run(tiny_checkpoint, tmp_path, out, ["rte", "cola"])
    with pytest.raises(UserError, match="--pooling must be 'last'"):
        run(tiny_checkpoint, tmp_path, out, ["rte"], pooling="mean")
    assert not out.exists()


@pytest.mark.slow
def test_finetune_command_plans_and_gives_an_eta_on_the_terminal_and_in_the_log(tiny_checkpoint, tmp_path, cli):
    """`onceupon finetune`: a bad file is one sentence (exit 2), nothing made; then the plan,
    and after the first steps an ETA, on the terminal and in the log file."""
    root = write_rte(tmp_path / "full_eval")
    out = tmp_path / "out"
    train = root / "glue_filtered" / "rte.train.jsonl"
    good = train.read_bytes()
    args = ("finetune", str(tiny_checkpoint), "--data", str(tmp_path), "--out", str(out), "--tasks", "rte")
    train.write_bytes(good + b'{"sentence1": "caf\xe9", "sentence2": "x", "label": 0}\n')
    assert_one_sentence(cli(*args), "rte.train.jsonl", "UTF-8")
    assert not out.exists()

    train.write_bytes(good)
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    plan = "finetune rte: 64 training examples, 20 optimizer steps (forward and backward) over 10 epochs, 24 validation examples"
    eta = "finetune rte: 5 steps took"
    for text in (done.stderr, (out / "log.txt").read_text()):
        assert plan in text and eta in text and "left for its 15 other steps" in text
    assert json.loads((out / "rte" / "predictions.json").read_text())["rte"]["predictions"][0]["id"] == "rte_0"
    assert not (out / "rte" / "resume_point").exists()


@pytest.mark.slow
def test_two_processes_share_each_batch_of_the_one_process_run(tiny_checkpoint, tmp_path):
    """Two CPU processes (torchrun, gloo, as pretraining's test: `accelerate launch --cpu` starts
    only one): each takes half of every batch of 32, so the run has the single process's steps
    and epochs, and the same data in each step: its training losses match the single
    process's up to dropout (each process draws its own) and summation order; the validation
    items are split between the two and gathered in order."""
    import subprocess
    import sys

    from test_interact_run import cli_env

    write_rte(tmp_path / "full_eval")
    args = ["-m", "onceupon.cli", "finetune", str(tiny_checkpoint), "--data", str(tmp_path), "--tasks", "rte"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=900, env={**cli_env(), "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True, timeout=900, env=cli_env())
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = (json.loads((tmp_path / d / "rte" / "results.json").read_text()) for d in ("two", "one"))
    assert (a["processes"], b["processes"]) == (2, 1)
    assert (a["steps"], a["epochs"], a["n"]) == (b["steps"], b["epochs"], b["n"]) == (20, 10, 24)
    assert max(abs(x - y) for x, y in zip(a["train_loss"], b["train_loss"])) < 0.1
    preds = json.loads((tmp_path / "two" / "rte" / "predictions.json").read_text())["rte"]["predictions"]
    assert [p["id"] for p in preds] == [f"rte_{i}" for i in range(24)]
    assert two.stderr.count("finetune rte: 64 training examples") == 1  # the plan once, from the main process
