"""Pretraining: exact word accounting, milestone checkpoints, learning, resume after kill -9,
and clear errors. The end-to-end tests drive the real CLI in subprocesses."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from onceupon.config import ExperimentConfig
from onceupon.student.packing import build_packed, word_ends, words_per_token
from onceupon.student.plan import make_plan
from onceupon.student.pretrain import milestones_for
from onceupon.student.tokenizer import train_tokenizer
from onceupon.words import count_words, milestone_name

from conftest import assert_one_sentence, run_cli

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
# configs/tiny.yaml, shrunk so that three runs fit the fast suite: 20K storyworld words, 2 epochs.
TINY_ARGS = ["--config", TINY, "--set", "corpus.word_budget=20K", "--set", "pretrain.epochs=2"]
# No Hub. One thread: a model this small gains nothing from more, and one thread per test
# process keeps parallel test runs on a shared machine from oversubscribing the cores.
ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

DOCS = [
    "Once upon a time, in a faraway land, there lived a little fox.",
    "  Leading spaces,\tdouble  spaces\n\nand blank lines  ",
    "Zoë ate crème brûlée at the café; 小狐狸 smiled. 🦊",
    "",
    "a b c d e f g h i j k l m n o p q r s t u v w x y z",
    "supercalifragilisticexpialidocious-antidisestablishmentarianism",
] * 7


# --------------------------------------------------------------------------- word accounting
def test_word_ends_agree_with_the_word_counter_on_every_code_point():
    text = "".join(f"a{chr(cp)}b" for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF)
    assert len(word_ends(text)) == count_words(text)


def test_each_word_is_counted_once_at_the_token_where_it_ends():
    tok = train_tokenizer(DOCS, vocab_size=400, min_frequency=2)
    text = "Once upon  a time, zxqv!"
    enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
    counts = words_per_token(text, np.array([e for _, e in enc.offsets]))
    assert counts.sum() == count_words(text) == 5
    ends = {e for _, e in enc.offsets}
    for j, (_, end) in enumerate(enc.offsets):
        # a token gets a word exactly when a word ends inside it
        assert counts[j] == sum(1 for w in word_ends(text) if (j == 0 or enc.offsets[j - 1][1] < w) and w <= end)
    assert len(ends) > 1


@pytest.mark.parametrize("context_length", [8, 13, 64])
def test_packed_word_counts_sum_to_the_corpus_words(context_length):
    tok = train_tokenizer(DOCS, vocab_size=400, min_frequency=2)
    packed = build_packed(tok, DOCS, context_length, show_progress=False)
    assert packed.total_words == sum(count_words(d) for d in DOCS)
    assert packed.tokens.shape == (packed.n_sequences, context_length)
    assert (packed.valid[:-1] == context_length).all() and 0 < packed.valid[-1] <= context_length
    stream = packed.tokens.reshape(-1)[: packed.total_tokens]
    assert stream[0] == tok.bos_token_id and stream[-1] == tok.eos_token_id
    assert (stream == tok.eos_token_id).sum() == sum(1 for d in DOCS if d.strip())  # one </s> per document


def test_plan_sees_every_sequence_once_per_epoch_and_stops_exactly():
    rng = np.random.default_rng(0)
    words = rng.integers(0, 60, size=101)
    tokens = np.full(101, 64)
    plan = make_plan(words, tokens, epochs=3, max_words=None, global_batch=8, seed=1)
    assert plan.words_after[-1] == plan.target_words == 3 * words.sum()
    assert sorted(plan.order[:101]) == list(range(101)) and sorted(plan.order[101:202]) == list(range(101))
    assert list(plan.order[:101]) != list(plan.order[101:202])  # reshuffled each epoch
    assert (np.diff(plan.words_after) >= 0).all()

    # max_words: stop after the first step that reaches it; overshoot below one step's words.
    capped = make_plan(words, tokens, epochs=3, max_words=1000, global_batch=8, seed=1)
    assert capped.words_after[-1] >= 1000 > capped.words_before(capped.n_steps - 1)
    # Fractional epochs.
    half = make_plan(words, tokens, epochs=0.5, max_words=None, global_batch=8, seed=1)
    assert half.target_words == int(0.5 * words.sum()) and half.words_before(half.n_steps - 1) < half.target_words


def test_milestones_are_capped_at_the_target_which_comes_last():
    cfg = ExperimentConfig.model_validate({"pretrain": {"milestone_unit": "1K"}})
    assert milestones_for(cfg, 25_500) == [1000 * i for i in range(1, 11)] + [20_000, 25_500]
    assert milestones_for(cfg, 20_000)[-1] == 20_000
    cfg = ExperimentConfig.model_validate({"pretrain": {"milestones": "every", "milestone_every": "5K"}})
    assert milestones_for(cfg, 12_000) == [5_000, 10_000, 12_000]


# --------------------------------------------------------------------------- end to end
def _metrics(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _checkpoints(run: Path) -> dict[str, dict]:
    return {p.name: json.loads((p / "onceupon.json").read_text()) for p in sorted((run / "checkpoints").glob("chck_*"))}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("pretrain") / "run"
    result = run_cli("pretrain", "--out", str(run), *TINY_ARGS, env=ENV)
    assert result.returncode == 0, result.stderr
    return run


def test_tiny_run_learns(tiny_run):
    rows = _metrics(tiny_run)
    losses = [float(r["loss"]) for r in rows]
    assert losses[-1] < losses[0] - 1.5, losses  # from ~ln(vocab) to clearly below
    assert all(float(r["tokens_per_s"]) > 0 for r in rows)
    lrs = [float(r["learning_rate"]) for r in rows]
    assert max(lrs) <= 3e-3 + 1e-12 and lrs[-1] < lrs[len(lrs) // 2]  # warmup then decay
    assert (tiny_run / "tensorboard").is_dir() and any((tiny_run / "tensorboard").iterdir())


def test_milestones_and_exact_word_counts(tiny_run):
    stats = json.loads((tiny_run / "corpus" / "stats.json").read_text())
    packed_info = json.loads((tiny_run / "packed" / "info.json").read_text())
    assert packed_info["words"] == stats["words"]  # one epoch of packed data = the corpus, exactly
    target = 2 * stats["words"]
    checkpoints = _checkpoints(tiny_run)
    expected = [1000 * i for i in range(1, 11)] + [20_000, 30_000] + ([40_000] if target >= 40_000 else []) + [target]
    assert set(checkpoints) == {milestone_name(m) for m in expected}
    steps = {}
    for milestone in expected:
        meta = checkpoints[milestone_name(milestone)]
        assert meta["stage"] == "pretrain" and meta["pretrain_words"] >= milestone
        steps[milestone] = meta["step"]
    final = checkpoints[milestone_name(target)]
    assert final["pretrain_words"] == target and final["extra"]["final"] is True
    assert final["extra"]["epochs_seen"] == 2.0
    # A checkpoint is written at the first step that reaches its milestone, not later.
    rows = {int(r["step"]): int(r["words_seen"]) for r in _metrics(tiny_run)}
    for milestone, step in steps.items():
        if step - 1 in rows:
            assert rows[step - 1] < milestone
    # Resume state only in the latest checkpoint (keep_resume_state: latest).
    with_state = [name for name in checkpoints if (tiny_run / "checkpoints" / name / "trainer_state").is_dir()]
    assert with_state == [milestone_name(target)]
    assert not (tiny_run / "hub_pushed.json").exists()  # push_to_hub is off: nothing pushed


def test_checkpoints_load_with_auto_classes_and_generate(tiny_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    by_words = sorted((tiny_run / "checkpoints").glob("chck_*"), key=lambda p: json.loads((p / "onceupon.json").read_text())["pretrain_words"])
    for path in by_words:
        model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        assert model.config.vocab_size == len(tokenizer)
        assert tokenizer.model_max_length == model.config.n_positions == 128
    final = by_words[-1]
    model, tokenizer = AutoModelForCausalLM.from_pretrained(final), AutoTokenizer.from_pretrained(final)
    inputs = tokenizer("Once upon a time", return_tensors="pt")
    assert inputs["input_ids"][0, 0] == tokenizer.bos_token_id
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=30, do_sample=True, top_k=0, pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert count_words(text) >= 3, text

    # On a story it never saw, the final checkpoint predicts far better than the first one.
    from onceupon.corpus.storyworld import generate

    unseen = generate(1, seed=987_654)[0].text
    ids = tokenizer(unseen, return_tensors="pt", truncation=True)["input_ids"]  # model_max_length = context

    def nll(path: Path) -> float:
        with torch.no_grad():
            return float(AutoModelForCausalLM.from_pretrained(path)(ids, labels=ids).loss)

    assert nll(final) < nll(by_words[0]) - 1.0


def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny_run, tmp_path):
    run = tmp_path / "killed"
    kill_at = run / "checkpoints" / "chck_10K" / "onceupon.json"
    env = {**os.environ, **ENV}
    proc = subprocess.Popen(
        [sys.executable, "-m", "onceupon.cli", "pretrain", "--out", str(run), *TINY_ARGS],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    deadline = time.time() + 300
    while not kill_at.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert still_running, proc.stderr.read().decode()
    reference = _checkpoints(tiny_run)
    final_name = max(reference, key=lambda n: reference[n]["pretrain_words"])
    assert not (run / "checkpoints" / final_name).exists()  # it really was cut short

    result = run_cli("pretrain", "--resume", str(run), env=ENV)
    assert result.returncode == 0, result.stderr
    resumed = _checkpoints(run)
    assert {n: (m["pretrain_words"], m["step"]) for n, m in resumed.items()} == {
        n: (m["pretrain_words"], m["step"]) for n, m in reference.items()
    }
    # The metrics log has each step once, as if never interrupted, with the same losses.
    rows, ref_rows = _metrics(run), _metrics(tiny_run)
    assert [r["step"] for r in rows] == [r["step"] for r in ref_rows]
    assert [r["words_seen"] for r in rows] == [r["words_seen"] for r in ref_rows]
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]
    # On a CPU the resumed weights are bit-identical.
    from safetensors.numpy import load_file

    ours = load_file(run / "checkpoints" / final_name / "model.safetensors")
    theirs = load_file(tiny_run / "checkpoints" / final_name / "model.safetensors")
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k], theirs[k]) for k in ours)

    # Resuming a finished run changes nothing.
    again = run_cli("pretrain", "--resume", str(run), env=ENV)
    assert again.returncode == 0 and "already complete" in again.stderr


# --------------------------------------------------------------------------- user errors
def _bad_inputs(tmp: Path) -> dict[str, list[str]]:
    empty = tmp / "empty.txt"
    empty.write_text("   \n\n  \n")
    binary = tmp / "binary.txt"
    binary.write_bytes(b"Once upon a time \xff\xfe\xfa not text")
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("pretrain:\n  epochs: [1, 2\n")
    files = ["--set", "corpus.source=files", "--set"]
    return {
        "missing file": ["--config", TINY, *files, f"corpus.paths=[{tmp / 'nope.txt'}]"],
        "empty corpus": ["--config", TINY, *files, f"corpus.paths=[{empty}]"],
        "undecodable bytes": ["--config", TINY, *files, f"corpus.paths=[{binary}]"],
        "bad yaml": ["--config", str(bad_yaml)],
        "missing config": ["--config", str(tmp / "nope.yaml")],
        "unknown key": ["--config", TINY, "--set", "pretrain.epochz=2"],
        "wrong type": ["--config", TINY, "--set", "pretrain.batch_size=many"],
        "unknown preset": ["--config", TINY, "--set", "student.preset=gpt9-huge"],
        "every without interval": ["--config", TINY, "--set", "pretrain.milestones=every"],
        "hub unreachable": ["--config", TINY, "--set", "pretrain.push_to_hub=someone/student"],
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "empty corpus",
        "undecodable bytes",
        "bad yaml",
        "missing config",
        "unknown key",
        "wrong type",
        "unknown preset",
        "every without interval",
        "hub unreachable",
    ],
)
def test_bad_input_is_one_clear_sentence_and_exit_2(case, tmp_path):
    run = tmp_path / "run"
    result = run_cli("pretrain", "--out", str(run), *_bad_inputs(tmp_path)[case], env=ENV)
    assert_one_sentence(result)
    assert not (run / "checkpoints").exists() and not (run / "tokenizer").exists()


def test_tokenizer_training_shows_its_progress(tmp_path, monkeypatch):
    # On a large corpus training the tokenizer takes minutes: it must not be a silent step.
    from onceupon.student.prepare import ensure_tokenizer
    from onceupon.tracking import run_log

    monkeypatch.setenv("ONCEUPON_PROGRESS", "plain")
    cfg = ExperimentConfig.model_validate({"tokenizer": {"vocab_size": 400}})
    docs = DOCS * (2500 // len(DOCS) + 1)
    with run_log(tmp_path / "log.txt"):
        ensure_tokenizer(cfg, tmp_path, lambda: docs, 64, show_progress=True)
    assert f"tokenizer: {len(docs):,}/{len(docs):,} documents (100%)" in (tmp_path / "log.txt").read_text()
    assert (tmp_path / "tokenizer" / "tokenizer.json").is_file()


def test_resume_and_out_misuse(tmp_path, tiny_run):
    not_a_run = run_cli("pretrain", "--resume", str(tmp_path))
    assert not_a_run.returncode == 2 and "not a pretraining run" in not_a_run.stderr
    both = run_cli("pretrain", "--out", str(tmp_path / "a"), "--resume", str(tmp_path))
    assert both.returncode == 2 and "exactly one" in both.stderr
    reuse = run_cli("pretrain", "--out", str(tiny_run), *TINY_ARGS)
    assert reuse.returncode == 2 and "--resume" in reuse.stderr
    overrides = run_cli("pretrain", "--resume", str(tiny_run), "--set", "pretrain.epochs=5")
    assert overrides.returncode == 2 and "would change pretrain.epochs from 2.0 to 5.0, which alters the run" in overrides.stderr


def test_resume_of_an_interaction_run_is_refused_before_anything_is_written(tmp_path):
    run = tmp_path / "interaction"
    run.mkdir()
    shutil.copy(TINY, run / "config.yaml")  # a run's config, as an interaction run keeps one
    (run / "state.json").write_text('{"step": 3, "done": false}\n')
    (run / "anthology.jsonl").write_text("")
    before = sorted(p.name for p in run.iterdir())
    result = run_cli("pretrain", "--resume", str(run), env=ENV)
    assert result.returncode == 2 and "not a pretraining run to resume: it holds an interaction run" in result.stderr
    assert sorted(p.name for p in run.iterdir()) == before  # no corpus, tokenizer or packed data


# --------------------------------------------------------------------------- several processes
@pytest.mark.slow
def test_two_process_ddp_run_counts_words_like_one_process(tmp_path):
    """The ``accelerate``/DDP path on CPU: two processes (torchrun, gloo) with batch 5 each
    see the same words at the same steps as one process with batch 10, including a short
    last step where some micro-batches of a process are empty."""
    args = [
        "--config", TINY, "--set", "corpus.word_budget=5K", "--set", "pretrain.epochs=1",
        "--set", "pretrain.grad_accum=2", "--set", "pretrain.log_every=1",
        "--set", "pretrain.milestones=every", "--set", "pretrain.milestone_every=2K",
    ]  # fmt: skip
    env = {**os.environ, **ENV, "ACCELERATE_USE_CPU": "true"}
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "onceupon.cli", "pretrain",
         "--out", str(tmp_path / "ddp"), *args, "--set", "pretrain.batch_size=5"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr
    single = run_cli("pretrain", "--out", str(tmp_path / "one"), *args, "--set", "pretrain.batch_size=10", env=ENV)
    assert single.returncode == 0, single.stderr
    sequences = json.loads((tmp_path / "one" / "packed" / "info.json").read_text())["sequences"]
    assert 0 < sequences % 20 <= 10  # the last step is short: its second micro-batches are empty
    a, b = _checkpoints(tmp_path / "ddp"), _checkpoints(tmp_path / "one")
    assert {n: (m["pretrain_words"], m["step"]) for n, m in a.items()} == {n: (m["pretrain_words"], m["step"]) for n, m in b.items()}
    rows_a, rows_b = _metrics(tmp_path / "ddp"), _metrics(tmp_path / "one")
    assert [r["words_seen"] for r in rows_a] == [r["words_seen"] for r in rows_b]
    # Same data and initialisation: the optimisation agrees up to dropout and summation order.
    assert abs(float(rows_a[-1]["grad_norm"]) - float(rows_b[-1]["grad_norm"])) < 0.1


def test_a_resume_that_falls_back_says_which_steps_are_trained_again_and_why(tmp_path, capsys):
    """Before, a resume whose newer resume states were gone went back without a word."""
    from onceupon.config import load_config
    from onceupon.lifecycle.checkpoints import list_checkpoints, read_meta
    from onceupon.student import pretrain

    run = tmp_path / "run"
    cfg = load_config(TINY, ["corpus.word_budget=2K", "pretrain.epochs=1", "pretrain.milestone_unit=400",
                             "pretrain.keep_resume_state=all", "pretrain.log_every=1"])  # fmt: skip
    pretrain.run(cfg, run)
    *_, older, newer, final = list_checkpoints(run)
    shutil.rmtree(final)  # as if killed before the last checkpoint
    shutil.rmtree(newer / "trainer_state")
    capsys.readouterr()
    pretrain.run(None, run, resume=True)
    step, last = read_meta(older).step, max(int(r["step"]) for r in _metrics(run))
    said = f"--resume continues from {older} (step {step}), not from step {last} that {run} recorded: the newer {newer} has no trainer_state/state.pt (deleted or never written); steps {step + 1}-{last} are trained again."
    assert said in capsys.readouterr().err.splitlines()
    assert said in (run / "log.txt").read_text()
