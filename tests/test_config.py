import json
import math
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from onceupon.config import PAPER_PROMPT, ExperimentConfig, load_config, save_config
from onceupon.errors import UserError

from conftest import assert_one_sentence


def test_defaults_are_the_papers():
    c = ExperimentConfig()
    assert c.interact.prompt == PAPER_PROMPT
    assert (c.interact.batch_size, c.interact.max_new_tokens, c.interact.learning_rate) == (360, 90, 1e-6)
    assert (c.interact.init_kl_coef, c.interact.target_kl, c.interact.kl_horizon) == (0.2, 6.0, 10_000)
    assert (c.interact.cliprange, c.interact.vf_coef, c.interact.gamma, c.interact.lam) == (0.2, 0.1, 1.0, 0.95)
    assert (c.interact.length_bonus, c.interact.input_budget) == (0.4, 1_000_000)
    assert (c.teacher.temperature, c.teacher.max_tokens) == (0.2, 6)
    assert (c.tokenizer.vocab_size, c.tokenizer.min_frequency) == (16_000, 2)
    assert (c.pretrain.learning_rate, c.pretrain.epochs) == (5e-4, 10)


def test_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("pretrain:\n  epochs: 2\ninteract:\n  input_budget: 50K\n")
    c = load_config(p, ["pretrain.batch_size=8", "teacher.backend=openai", "interact.prompt=Hello there"])
    assert c.pretrain.epochs == 2 and c.pretrain.batch_size == 8
    assert c.interact.input_budget == 50_000
    assert c.teacher.backend == "openai"
    assert c.interact.prompt == "Hello there"


@pytest.mark.parametrize(
    "text, overrides, needle",
    [
        ("pretrain:\n  epochz: 2\n", [], "pretrain.epochz"),
        ("pretrain:\n  epochs: many\n", [], "pretrain.epochs"),
        ("", ["interact.algorithm=dqn"], "interact.algorithm"),
        ("", ["nonsense"], "key=value"),
        ("pretrain: [1, 2\n", [], "not valid YAML"),
        ("- a\n- b\n", [], "mapping"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, text, overrides, needle):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(UserError) as e:
        load_config(p, overrides)
    assert needle in str(e.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_saved_config_round_trips(tmp_path):
    c = load_config(None, ["pretrain.epochs=3", "teacher.api_key_env=MY_KEY"])
    path = save_config(c, tmp_path)
    again = ExperimentConfig.model_validate(yaml.safe_load(path.read_text()))
    assert again == c


def test_cli_bad_input_is_one_sentence_and_exit_2(tmp_path, cli):
    p = tmp_path / "c.yaml"
    p.write_text("corpus:\n  sauce: files\n")
    r = cli("corpus", "--out", str(tmp_path / "run"), "--config", str(p))
    assert assert_one_sentence(r) == "error: unknown config key 'corpus.sauce'."
    assert not (tmp_path / "run").exists()


def test_config_command_prints_the_resolved_config(cli):
    r = cli("config", "--set", "interact.batch_size=8")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout)["interact"]["batch_size"] == 8
    r = cli("config", "--reference")
    assert r.returncode == 0 and "`input_budget`" in r.stdout


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("name", ["paper.yaml", "tiny.yaml", "demo.yaml"])
def test_shipped_configs_load(name):
    load_config(CONFIGS / name)


def test_paper_config_is_the_papers_setting():
    """configs/paper.yaml against the settings the paper reports."""
    c = load_config(CONFIGS / "paper.yaml")
    assert c.corpus.fraction == 0.9 and c.tokenizer.vocab_size == 16_000 and c.tokenizer.min_frequency == 2
    assert c.student.preset == "gpt2-paper"
    from onceupon.student.model import PRESETS

    shape = PRESETS["gpt2-paper"]
    assert (shape.n_layer, shape.n_head, shape.n_embd, shape.context_length) == (12, 12, 768, 512)
    p = c.pretrain
    assert (p.epochs, p.batch_size, p.grad_accum, p.learning_rate, p.warmup_fraction) == (10, 16, 4, 5e-4, 0.01)
    assert (p.milestones, p.milestone_unit) == ("babylm", 1_000_000)
    t = c.teacher
    assert (t.model, t.temperature, t.max_tokens) == ("meta-llama/Llama-3.1-8B-Instruct", 0.2, 6)
    i = c.interact
    assert i.algorithm == "ppo" and i.prompt == PAPER_PROMPT
    assert (i.max_new_tokens, i.temperature, i.top_k, i.top_p) == (90, 1.0, 0, 1.0)
    assert (i.batch_size, i.mini_batch_size, i.epochs, i.learning_rate) == (360, 360, 4, 1e-6)
    assert (i.init_kl_coef, i.adaptive_kl, i.target_kl, i.kl_horizon) == (0.2, True, 6.0, 10_000)
    assert (i.cliprange, i.vf_coef, i.gamma, i.lam) == (0.2, 0.1, 1.0, 0.95)
    assert (i.length_bonus, i.length_norm_words) == (0.4, 90)
    assert (i.input_budget, i.count_prompt, i.checkpoint_every) == (1_000_000, "once", 100_000)


# --------------------------------------------------------------------------- values that cannot work (fuzzed too)

_SCALARS = st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats() | st.text(max_size=8)
_JSON_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
FUZZ_CONFIG = settings(max_examples=60, deadline=None)
@pytest.mark.parametrize(
    "settings_, needle",
    [
        (["pretrain.epochs=inf"], "pretrain.epochs"),
        (["pretrain.epochs=nan"], "pretrain.epochs"),
        (["pretrain.epochs=1e300"], "pretrain.epochs"),  # finite, but planning it never ended
        (["pretrain.max_words=inf"], "word count"),
        (["interact.seed=99999999999999999999999"], "interact.seed"),
        (["pretrain.seed=-1"], "pretrain.seed"),
        (["pretrain.batch_size=99999999999999999999999"], "pretrain.batch_size"),
        (["interact.mini_batch_size=64", "interact.batch_size=8"], "interact.mini_batch_size (64) must not exceed interact.batch_size (8)"),
        (["interact.micro_batch_size=400"], "interact.micro_batch_size"),
        (["teacher.criteria=[]"], "teacher.criteria"),
        (["report.confidence=.nan"], "report.confidence"),
    ],
)
def test_config_values_that_cannot_work_are_one_sentence(settings_, needle):
    with pytest.raises(UserError) as caught:
        load_config(None, settings_)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_the_largest_seed_numpy_takes_is_accepted():
    import numpy as np

    cfg = load_config(None, ["interact.seed=4294967295"])
    np.random.seed(cfg.interact.seed)


def _leaf_keys(model=ExperimentConfig, prefix=""):
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _leaf_keys(annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


_SET_VALUES = st.one_of(
    st.integers(-(10**25), 10**25).map(str),
    st.floats().map(repr),
    st.sampled_from(["inf", "-inf", ".nan", "nan", "[]", "{}", "null", "true", "1M", "1e400", "[1, 2]", "{a: 1}", "'", ""]),
    st.text(max_size=10),
)


@FUZZ_CONFIG
@given(key=st.sampled_from(list(_leaf_keys())), value=_SET_VALUES)
def test_fuzz_config_set(key, value):
    """Any value for any key: a config, or one sentence."""
    try:
        cfg = load_config(None, [f"{key}={value}"])
    except UserError as e:
        assert "\n" not in str(e)
        return
    for number in _numbers(cfg.model_dump()):
        assert math.isfinite(number) and (isinstance(number, float) or abs(number) < 2**63)


def _numbers(data):
    if isinstance(data, dict):
        for v in data.values():
            yield from _numbers(v)
    elif isinstance(data, list):
        for v in data:
            yield from _numbers(v)
    elif isinstance(data, (int, float)) and not isinstance(data, bool):
        yield data


@FUZZ_CONFIG
@given(text=st.text(max_size=80) | _JSON_VALUES.map(lambda v: json.dumps({"pretrain": v})))
@example(text='{"pretrain": {"\\n": null}}')  # a key holding a newline: found by this test, its message was two lines
def test_fuzz_config_file(text):
    path = Path(tempfile.mkdtemp(prefix="onceupon-config-")) / "c.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_config(path)
    except UserError as e:
        assert "\n" not in str(e)


# --------------------------------------------------------------------------- --resume and the saved config
def _run_with(tmp_path, *settings: str) -> tuple[Path, ExperimentConfig]:
    from onceupon.config import save_config

    cfg = load_config(None, list(settings))
    save_config(cfg, tmp_path)
    return tmp_path, cfg


def test_resume_continues_with_the_saved_config(tmp_path):
    from onceupon.config import resume_config

    run, cfg = _run_with(tmp_path, "interact.batch_size=8")
    assert resume_config(run) == cfg and (run / ".config.yaml").read_text() == (run / "config.yaml").read_text()


def test_resume_refuses_an_edited_config_yaml_naming_the_key(tmp_path):
    """One run ended with two batch sizes: config.yaml was edited between two --resume."""
    from onceupon.config import resume_config

    run, _ = _run_with(tmp_path, "interact.batch_size=8")
    edited = (run / "config.yaml").read_text().replace("batch_size: 8\n", "batch_size: 16\n", 1)
    (run / "config.yaml").write_text(edited)
    with pytest.raises(UserError, match=r"would change interact.batch_size from 8 to 16, which alters the run"):
        resume_config(run)
    assert (run / "config.yaml").read_text() == edited  # nothing rewritten


def test_resume_may_change_how_the_teacher_is_reached_and_records_it(tmp_path):
    from onceupon.config import given_on_resume, resume_config

    run, _ = _run_with(tmp_path)
    cfg = resume_config(run, given_on_resume(run, None, ["teacher.timeout=120", "report.dpi=200"]))
    assert cfg.teacher.timeout == 120 and load_config(run / "config.yaml").teacher.timeout == 120
    assert load_config(run / ".config.yaml").report.dpi == 200  # the record moves on too
    assert resume_config(run) == cfg


def test_resume_changes_names_every_key_that_alters_the_run():
    from onceupon.config import resume_changes

    saved = ExperimentConfig()
    given = load_config(None, ["interact.seed=3", "pretrain.epochs=2", "teacher.timeout=5", "teacher.criteria=[{name: a, description: b, levels: {0: x, 1: y}}]"])
    assert resume_changes(saved, given) == ["pretrain.epochs", "teacher.criteria", "interact.seed"]
    assert resume_changes(saved, saved) == []


def test_resumable_teacher_keys_never_change_the_judge():
    # --resume may change a teacher setting only if it changes how a request is sent, not what
    # the judge answers (teacher.judges.OPERATIONAL), else a resumed run is rated by another judge
    from onceupon.config import RESUMABLE_KEYS
    from onceupon.teacher.judges import OPERATIONAL

    teacher_keys = {k.removeprefix("teacher.") for k in RESUMABLE_KEYS if k.startswith("teacher.")}
    assert teacher_keys and teacher_keys <= OPERATIONAL


def test_set_on_resume_applies_to_the_runs_own_config(tmp_path):
    from onceupon.config import given_on_resume

    run, _ = _run_with(tmp_path, "interact.batch_size=8")
    assert given_on_resume(run, None, None) is None
    assert given_on_resume(run, None, ["teacher.timeout=9"]).interact.batch_size == 8
    with pytest.raises(UserError, match="holds no config.yaml"):
        given_on_resume(tmp_path / "nothing", None, ["teacher.timeout=9"])
