"""Shapes and sizes are checked before they are trusted.

- A checkpoint's ``config.json`` is checked against what onceupon recorded when it wrote the
  checkpoint (architecture, layers, width, vocabulary), and against the machine's memory,
  before any weights are read; one whose weights lack what the config names is refused
  rather than filled in at random.
- Every JSON, JSONL and YAML file a user gives is bounded: nesting deeper than
  ``files.MAX_DEPTH``, a key given twice (a YAML section written twice: the last silently won),
  a lone surrogate escape, a line or a config larger than such a file ever holds.

Each is one sentence (exit code 2 through the command line), never a traceback.
"""

from __future__ import annotations

import json
import re
import shutil
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import assert_one_sentence, run_cli

ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
FIX = "copy or save that checkpoint again"


# --------------------------------------------------------------------------- checkpoints
@pytest.fixture
def checkpoint(tiny_checkpoint, tmp_path) -> Path:
    """A copy of the tiny GPT-2 checkpoint (2 layers, width 64, vocabulary 400) to damage."""
    return Path(shutil.copytree(tiny_checkpoint, tmp_path / "checkpoints" / "chck_0W"))


def edit_config(checkpoint: Path, **changes) -> None:
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**config, **changes}))


def garbage_weights(checkpoint: Path) -> None:
    """Weights no one can read: a check that says something else ran before they were read."""
    for path in checkpoint.glob("*.safetensors"):
        path.write_bytes(b"\x00" * 64)


@pytest.mark.parametrize("changes, said", [
    ({"n_layer": 4}, "layers 4 where onceupon wrote 2"),
    ({"n_embd": 128}, "width 128 where onceupon wrote 64"),
    ({"vocab_size": 50257}, "vocabulary 50257 where onceupon wrote 400"),
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, "architecture llama where onceupon wrote gpt2"),
], ids=["two more layers", "wider", "another vocabulary", "another architecture"])
def test_a_config_that_is_not_the_model_onceupon_saved_is_refused_before_the_weights(checkpoint, changes, said):
    from onceupon.errors import UserError
    from onceupon.student.checkpoints import load_model

    edit_config(checkpoint, **changes)
    garbage_weights(checkpoint)
    with pytest.raises(UserError) as refused:
        load_model(checkpoint, FIX)
    message = str(refused.value)
    assert said in message and "is not the model onceupon saved there" in message and message.endswith(f"{FIX}.")


@pytest.mark.parametrize("content, said", [
    ("[1, 2]", "expected a JSON object, not a list"),
    ("{" + '"a": {' * 5000 + "}" * 5001, "nested more than 64 deep"),
    ('{"n_layer": 2, "n_layer": 4}', 'the key "n_layer" is given twice'),
    ('{"model_type": "gpt2\\ud800"}', "lone surrogate"),
], ids=["a list", "nested 5000 deep", "a key twice", "a lone surrogate"])
def test_a_config_json_that_is_not_a_plain_object_is_one_sentence(checkpoint, content, said):
    from onceupon.errors import UserError
    from onceupon.student.checkpoints import check_weights, load_model

    (checkpoint / "config.json").write_text(content)
    for check in (load_model, check_weights):
        with pytest.raises(UserError, match=said):
            check(checkpoint, FIX)


@pytest.mark.parametrize("name, content, said", [
    ("tokenizer.json", "[1]", "tokenizer.json: expected a JSON object, not a list"),
    ("tokenizer.json", '{"a": 1}', "cannot be read (KeyError"),  # JSON, but not a tokenizer
    ("tokenizer_config.json", "{" + '"a": {' * 5000 + "}" * 5001, "tokenizer_config.json: values are nested more than 64"),
    ("generation_config.json", '{"eos_token_id": 0, "eos_token_id": 1}', 'the key "eos_token_id" is given twice'),
])
def test_the_tokenizer_and_other_json_files_of_a_checkpoint_are_checked_too(checkpoint, name, content, said):
    """The loaders met these with a TypeError, a KeyError, an AttributeError or a RecursionError."""
    from onceupon.errors import UserError
    from onceupon.student.checkpoints import load_checkpoint_tokenizer

    (checkpoint / name).write_text(content)
    with pytest.raises(UserError) as refused:
        load_checkpoint_tokenizer(checkpoint, FIX)
    assert said in str(refused.value) and str(refused.value).endswith(f"{FIX}.") and "\n" not in str(refused.value)


def test_a_checkpoint_without_a_record_still_cannot_pass_made_up_layers(checkpoint):
    """A checkpoint from before the shape was recorded (or another tool's): the weights it
    holds are compared with what its config names, and missing ones are refused."""
    from onceupon.errors import UserError
    from onceupon.student.checkpoints import load_model

    meta = json.loads((checkpoint / "onceupon.json").read_text())
    del meta["shape"]
    (checkpoint / "onceupon.json").write_text(json.dumps(meta))
    load_model(checkpoint, FIX)  # as it was: fine
    edit_config(checkpoint, n_layer=4)
    with pytest.raises(UserError, match=r"does not hold the model its config.json describes \(no weights for transformer.h.2"):
        load_model(checkpoint, FIX)


def test_a_config_too_large_for_the_machine_is_refused_before_the_weights(checkpoint):
    from onceupon.errors import UserError
    from onceupon.student.checkpoints import load_model

    meta = json.loads((checkpoint / "onceupon.json").read_text())
    del meta["shape"]
    (checkpoint / "onceupon.json").write_text(json.dumps(meta))
    edit_config(checkpoint, n_layer=200, n_embd=65536, n_head=64)  # ~20 TB of parameters
    garbage_weights(checkpoint)
    with pytest.raises(UserError, match=r"by its config.json\) needs at least .* GB but this machine has"):
        load_model(checkpoint, FIX)


@pytest.mark.slow  # ~10 s: evaluate's imports in a subprocess
def test_the_command_says_it_in_one_sentence(checkpoint, tmp_path):
    edit_config(checkpoint, n_layer=4)
    result = run_cli("evaluate", str(checkpoint), "--out", str(tmp_path / "eval"), "--set", "evaluate.stories=0", env=ENV)
    assert_one_sentence(result, "layers 4 where onceupon wrote 2")
    assert not (tmp_path / "eval").exists()


# --------------------------------------------------------------------------- files a user gives
def nested(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


HOSTILE_JSON = {
    "nested 10,000 deep": (lambda: nested(10_000), "nested more than 64 deep"),
    "nested 100 deep": (lambda: nested(100), "nested more than 64 deep"),
    "a key twice": (lambda: '{"id": "a", "continuation": "x", "id": "b"}', 'the key "id" is given twice'),
    "a lone surrogate": (lambda: '{"id": "a", "continuation": "a fox \\udc80 ran"}', "lone surrogate escape (\\udc80)"),
}


@pytest.mark.parametrize("case", HOSTILE_JSON)
def test_a_hostile_stories_line_is_one_sentence(case, tmp_path):
    from onceupon.errors import UserError
    from onceupon.teacher.stories import read_stories

    make, said = HOSTILE_JSON[case]
    path = tmp_path / "stories.jsonl"
    path.write_text('{"id": "ok", "continuation": "a fox."}\n' + make() + "\n")
    with pytest.raises(UserError) as refused:
        read_stories(path)
    assert said in str(refused.value) and f"{path}, line 2" in str(refused.value) and "\n" not in str(refused.value)


def test_a_line_larger_than_any_record_is_refused_without_reading_it_all(tmp_path):
    from onceupon.errors import UserError
    from onceupon.teacher.stories import read_stories

    path = tmp_path / "stories.jsonl"
    path.write_text(json.dumps({"id": "huge", "prompt": "Once upon a time " * 100_000, "continuation": "x"}) + "\n")
    with pytest.raises(UserError, match=r"line 1: longer than 1 MiB"):
        read_stories(path)


@pytest.mark.parametrize("case", HOSTILE_JSON)
def test_a_hostile_json_file_is_one_sentence(case, tmp_path):
    from onceupon.errors import UserError
    from onceupon.schemas.run import read_interact_state

    make, said = HOSTILE_JSON[case]
    path = tmp_path / "state.json"
    path.write_text(make())
    with pytest.raises(UserError, match=re.escape(said)):
        read_interact_state(path)


HOSTILE_YAML = {
    "a section twice": ("teacher:\n  timeout: 3\nstudent:\n  preset: gpt2-micro\nteacher:\n  patience: 4\n",
                        "the key 'teacher' is given twice (the second at line 5)"),
    "a setting twice": ("pretrain:\n  epochs: 1\n  epochs: 2\n", "the key 'epochs' is given twice"),
    "nested 10,000 deep": ("interact:\n  prompt: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested more than 64 deep"),
    "nested 100 deep": ("interact:\n  prompt: " + "[" * 100 + "]" * 100 + "\n", "nested more than 64 deep"),
    "a lone surrogate": ('interact:\n  prompt: "Once upon a \\ud800 time"\n', "lone surrogate escape (\\ud800)"),
    "a 2 MB prompt": ("interact:\n  prompt: " + "a" * 2_000_000 + "\n", "2 MiB, more than a config ever holds"),
}


@pytest.mark.parametrize("case", HOSTILE_YAML)
def test_a_hostile_config_is_one_sentence(case, tmp_path):
    from onceupon.config import load_config
    from onceupon.errors import UserError

    text, said = HOSTILE_YAML[case]
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as refused:
        load_config(path)
    assert said in str(refused.value) and str(path) in str(refused.value) and "\n" not in str(refused.value)


def test_a_hostile_config_through_the_command_line(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text(HOSTILE_YAML["a section twice"][0])
    assert_one_sentence(run_cli("config", "-c", str(path)), "the key 'teacher' is given twice")
    assert_one_sentence(run_cli("config", "--set", "interact.prompt=" + "[" * 20_000), "nested more than 64 deep")


# --------------------------------------------------------------------------- the bounds, as a property
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(string.printable, max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(string.ascii_letters, max_size=4), inner, max_size=3),
    max_leaves=12,
)


def depth_of(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


@settings(max_examples=80, deadline=None)
@given(value=json_values, wrap=st.integers(min_value=0, max_value=200))
def test_json_within_the_bounds_reads_back_exactly_and_beyond_them_is_one_sentence(value, wrap):
    """Any JSON object: read back as written when it nests at most MAX_DEPTH deep, else one
    sentence; never another exception, whatever the depth."""
    from onceupon.config import parse_yaml
    from onceupon.errors import UserError
    from onceupon.files import MAX_DEPTH, json_object

    document = {"v": value}
    for _ in range(wrap):
        document = {"v": document}
    text = json.dumps(document)
    for parse in (lambda t: json_object(t, "f.json"), lambda t: parse_yaml(t, "f.yaml")):  # JSON is YAML too
        if depth_of(document) <= MAX_DEPTH:
            assert parse(text) == document
        else:
            with pytest.raises(UserError, match="nested more than"):
                parse(text)
