"""`onceupon corpus`: files, datasets and storyworld in; documents, word counts and a
seeded fraction/budget out; bad input is one sentence and exit code 2 with nothing left behind."""

import json
from pathlib import Path

import pytest
import yaml

from onceupon.config import CorpusConfig, ExperimentConfig
from onceupon.corpus.corpus import build_corpus, ensure_corpus, load_documents, select
from onceupon.corpus.readers import split_documents
from onceupon.errors import UserError
from onceupon.words import count_words

from conftest import assert_one_sentence

LINES = "The cat sat on the mat.\nA dog ran to the park.\nThe bird sang a song.\n"  # 17 words
PARAGRAPHS = "Once upon a time there was a fox.\nThe fox was red.\n\nOne day it met a bear.\nThey played.\n"  # 20


def documents_of(corpus_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (corpus_dir / "documents.jsonl").read_text().splitlines()]


def test_lines_paragraphs_and_auto():
    assert split_documents(LINES, "auto") == ["The cat sat on the mat.", "A dog ran to the park.", "The bird sang a song."]
    assert split_documents(PARAGRAPHS, "auto") == [
        "Once upon a time there was a fox.\nThe fox was red.",
        "One day it met a bear.\nThey played.",
    ]
    assert len(split_documents(PARAGRAPHS, "lines")) == 4
    assert split_documents("a b\r\n\r\nc\r\n", "paragraphs") == ["a b", "c"]
    # One utterance per line with a stray blank line is still one document per line.
    utterances = "".join(f"line {i}\n" for i in range(30)) + "\n" + "".join(f"more {i}\n" for i in range(30))
    assert len(split_documents(utterances, "auto")) == 60


def test_corpus_from_files_via_cli(cli, tmp_path):
    (tmp_path / "a.txt").write_text(LINES)
    run = tmp_path / "run"
    r = cli("corpus", "--out", str(run), "--set", "corpus.source=files", "--set", f"corpus.paths=[{tmp_path / 'a.txt'}]")
    assert r.returncode == 0, r.stderr
    docs = documents_of(run / "corpus")
    assert [d["text"] for d in docs] == ["The cat sat on the mat.", "A dog ran to the park.", "The bird sang a song."]
    assert {d["source"] for d in docs} == {"a.txt"}
    stats = json.loads((run / "corpus" / "stats.json").read_text())
    assert stats == {"words": 17, "documents": 3, "sources": {"a.txt": {"words": 17, "documents": 3}}}
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["corpus"]["source"] == "files"
    assert "17" in r.stdout and "a.txt" in r.stdout  # the table: words per source
    # no temp dirs left; .config.yaml is the run's own record of its config (--resume compares with it)
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == [".config.yaml"]


def test_directory_is_read_recursively_with_one_source_per_file(tmp_path):
    root = tmp_path / "texts"
    (root / "sub").mkdir(parents=True)
    (root / "one.txt").write_text(LINES)
    (root / "sub" / "two.txt").write_text(PARAGRAPHS)
    (root / "sub" / "childes.train").write_text("hi there\nbye now\n")
    (root / "notes.md").write_text("# not a corpus file\n")
    stats = build_corpus(CorpusConfig(source="files", paths=[str(root)]), tmp_path / "run" / "corpus")
    assert stats["sources"] == {
        "one.txt": {"words": 17, "documents": 3},
        "sub/childes.train": {"words": 4, "documents": 2},
        "sub/two.txt": {"words": 20, "documents": 2},
    }
    assert stats["words"] == sum(count_words(t) for t in load_documents(tmp_path / "run" / "corpus"))


def test_corpus_from_a_local_dataset(tmp_path):
    import datasets

    rows = {"text": ["A fox found a key.", "The bear slept.", ""], "label": [1, 2, 3]}
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows), "validation": datasets.Dataset.from_dict({"text": ["Hi."], "label": [0]})}
    ).save_to_disk(str(tmp_path / "ds"))
    stats = build_corpus(CorpusConfig(source="hub", dataset=str(tmp_path / "ds")), tmp_path / "r1" / "corpus")
    assert load_documents(tmp_path / "r1" / "corpus") == ["A fox found a key.", "The bear slept."]
    assert stats["sources"] == {"ds": {"words": 8, "documents": 2}}
    build_corpus(CorpusConfig(source="hub", dataset=str(tmp_path / "ds"), split="validation"), tmp_path / "r2" / "corpus")
    assert load_documents(tmp_path / "r2" / "corpus") == ["Hi."]
    with pytest.raises(UserError, match="no split 'test'"):
        build_corpus(CorpusConfig(source="hub", dataset=str(tmp_path / "ds"), split="test"), tmp_path / "r3" / "corpus")


def test_corpus_from_a_directory_of_data_files_via_cli(cli, tmp_path):
    data = tmp_path / "tinystories"
    data.mkdir()
    (data / "train.jsonl").write_text("".join(json.dumps({"story": s}) + "\n" for s in ["Once there was a cat.", "The end."]))
    run = tmp_path / "run"
    r = cli(
        "corpus", "--out", str(run), "--set", "corpus.source=hub", "--set", f"corpus.dataset={data}",
        "--set", "corpus.text_field=story", env={"HF_DATASETS_CACHE": str(tmp_path / "cache")},
    )
    assert r.returncode == 0, r.stderr
    assert [d["text"] for d in documents_of(run / "corpus")] == ["Once there was a cat.", "The end."]


def test_corpus_from_storyworld_with_a_budget(cli, tmp_path):
    run = tmp_path / "run"
    r = cli("corpus", "--out", str(run), "--set", "corpus.word_budget=20K", "--set", "corpus.seed=5")
    assert r.returncode == 0, r.stderr
    stats = json.loads((run / "corpus" / "stats.json").read_text())
    texts = load_documents(run / "corpus")
    assert sum(count_words(t) for t in texts) == stats["words"] <= 20_000
    assert stats["words"] > 19_000  # cut within one story of the budget
    assert stats["sources"]["storyworld"]["documents"] == len(texts)
    assert any(t.startswith("Let me tell you a long, magical tale. Once upon a time, in a faraway land,") for t in texts)


def test_budget_and_fraction_are_exact_and_seeded():
    counts = [((i * 37) % 11) + 1 for i in range(200)]
    keep = select(counts, 0.9, None, seed=1)
    assert len(keep) == 180 and keep == sorted(keep)
    assert keep == select(counts, 0.9, None, seed=1)
    assert keep != select(counts, 0.9, None, seed=2)

    budget = 300
    kept = select(counts, 1.0, budget, seed=1)
    assert sum(counts[i] for i in kept) <= budget
    # Cut at whole documents: the next document of the seeded order would have passed the budget.
    import random

    order = list(range(200))
    random.Random(1).shuffle(order)
    nxt = order[len(kept)]
    assert sum(counts[i] for i in kept) + counts[nxt] > budget
    assert set(kept) == set(order[: len(kept)])
    # Fraction first, then the budget, both along the same seeded order.
    both = select(counts, 0.9, budget, seed=1)
    assert set(both) <= set(keep) and sum(counts[i] for i in both) <= budget
    assert select(counts, 1.0, None, seed=1) == list(range(200))


def test_fraction_and_budget_in_a_built_corpus(tmp_path):
    (tmp_path / "a.txt").write_text("".join(f"word{i} " * (1 + i % 5) + "\n" for i in range(100)))
    cfg = CorpusConfig(source="files", paths=[str(tmp_path / "a.txt")], fraction=0.9, seed=3)
    stats = build_corpus(cfg, tmp_path / "r" / "corpus")
    assert stats["documents"] == 90
    again = build_corpus(cfg, tmp_path / "r2" / "corpus")
    assert load_documents(tmp_path / "r" / "corpus") == load_documents(tmp_path / "r2" / "corpus")
    budgeted = build_corpus(cfg.model_copy(update={"word_budget": 100}), tmp_path / "r3" / "corpus")
    assert 95 < budgeted["words"] <= 100  # documents have at most 5 words
    assert again == stats


def test_ensure_corpus_builds_reuses_and_refuses_a_different_config(tmp_path):
    cfg = ExperimentConfig()
    cfg.corpus.storyworld.stories = 30
    corpus_dir = ensure_corpus(cfg, tmp_path)
    assert corpus_dir == tmp_path / "corpus"
    texts = load_documents(corpus_dir)
    assert len(texts) == 30
    mtime = (corpus_dir / "documents.jsonl").stat().st_mtime_ns
    assert ensure_corpus(cfg, tmp_path) == corpus_dir
    assert (corpus_dir / "documents.jsonl").stat().st_mtime_ns == mtime  # reused, not rebuilt
    cfg.corpus.seed = 1
    with pytest.raises(UserError, match=r"corpus\.seed"):
        ensure_corpus(cfg, tmp_path)
    assert load_documents(corpus_dir) == texts


def test_load_documents_without_a_corpus(tmp_path):
    with pytest.raises(UserError, match="onceupon corpus"):
        load_documents(tmp_path)


def _bad_inputs(tmp_path: Path):
    import datasets

    (tmp_path / "empty.txt").write_text("\n\n  \n")
    (tmp_path / "good.txt").write_text(LINES)
    (tmp_path / "latin1.txt").write_bytes("Caf\xe9 au lait\n".encode("latin-1"))
    (tmp_path / "emptydir").mkdir()
    datasets.Dataset.from_dict({"story": ["a b"]}).save_to_disk(str(tmp_path / "ds"))
    files = ["--set", "corpus.source=files"]
    return [
        (files + ["--set", f"corpus.paths=[{tmp_path / 'missing.txt'}]"], "does not exist"),
        (files + ["--set", f"corpus.paths=[{tmp_path / 'nodir'}/]"], "does not exist"),
        (files + ["--set", f"corpus.paths=[{tmp_path / 'empty.txt'}]"], "empty"),
        (files + ["--set", f"corpus.paths=[{tmp_path / 'emptydir'}]"], "holds no files"),
        (files + ["--set", f"corpus.paths=[{tmp_path / 'good.txt'},{tmp_path / 'latin1.txt'}]"], "latin1.txt is not valid UTF-8"),
        (files, "corpus.paths is empty"),
        (["--set", "corpus.source=hub", "--set", f"corpus.dataset={tmp_path / 'ds'}"], "no column 'text'"),
        (["--set", "corpus.source=hub", "--set", "corpus.dataset=nobody/no-such-dataset"], "Hugging Face cache"),
        (["--set", "corpus.word_budget=3"], "smaller than every document"),
    ]


def test_bad_input_is_one_sentence_exit_2_and_leaves_no_corpus(cli, tmp_path):
    for i, (args, needle) in enumerate(_bad_inputs(tmp_path)):
        run = tmp_path / f"run{i}"
        r = cli("corpus", "--out", str(run), *args, env={"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
        assert_one_sentence(r, needle)
        assert not (run / "corpus").exists()
        assert not (run.exists() and any(p.name.startswith(".corpus") for p in run.iterdir()))


def test_a_failed_rebuild_keeps_the_existing_corpus(cli, tmp_path):
    run = tmp_path / "run"
    assert cli("corpus", "--out", str(run), "--set", "corpus.storyworld.stories=5").returncode == 0
    before = (run / "corpus" / "documents.jsonl").read_bytes()
    r = cli("corpus", "--out", str(run), "--set", "corpus.storyworld.stories=6")
    assert r.returncode == 2 and "different corpus config" in r.stderr
    assert (run / "corpus" / "documents.jsonl").read_bytes() == before


def test_storyworld_documents_come_one_at_a_time(monkeypatch):
    # The corpus's progress line advances as stories are told, not once millions of words are.
    from onceupon.corpus import readers, storyworld

    told = []
    real = storyworld.generate_story
    monkeypatch.setattr(storyworld, "generate_story", lambda *a, **k: told.append(1) or real(*a, **k))
    for needed, stories in ((10_000_000, None), (None, 100_000)):
        told.clear()
        cfg = CorpusConfig(source="storyworld", storyworld={"stories": stories})
        next(readers.read_storyworld(cfg, needed))
        assert len(told) == 1, (needed, stories)
