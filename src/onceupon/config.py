"""Configuration: one pydantic model per stage, gathered in :class:`ExperimentConfig`.

An experiment is one YAML file with a section per stage (``corpus``, ``tokenizer``,
``student``, ``pretrain``, ``teacher``, ``interact``, ``evaluate``, ``report``); every command
reads the sections it needs. ``--set section.key=value`` overrides any field. Unknown keys and
wrong types are errors that name the key. Defaults are the paper's settings
(Mayer Martins et al., BabyLM 2025) unless a field says otherwise; ``configs/`` holds ready files.

Each field is declared once, here, with its default and meaning (the CleanRL habit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from onceupon.errors import UserError
from onceupon.files import MAX_DEPTH, atomic_write_text, checked_value, read_text_file
from onceupon.words import parse_word_count

#: An int that may be written as "1M", "500K", "1_000_000" in YAML or on the command line.
WordCount = Annotated[int, BeforeValidator(parse_word_count)]
# YAML reads a bare `off` as false (and `on` as true): `constrained: off` must still mean "off".
Constrained = Annotated[
    Literal["auto", "off", "regex", "json_schema"],
    BeforeValidator(lambda v: {False: "off", True: "auto"}.get(v, v) if isinstance(v, bool) else v),
]

#: Seeds go to numpy (``np.random.seed`` takes 0..2**32-1), torch and Python's random.
MAX_SEED = 2**32 - 1
#: The largest whole number a setting may hold: what torch and numpy store in an int64.
MAX_INT = 2**63 - 1

PAPER_PROMPT = "Let me tell you a long, magical tale. Once upon a time, in a faraway land,"


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated,
    numbers are finite (no nan or inf) and whole numbers fit in an int64."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _fits(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            raise ValueError(f"must be at most {MAX_INT:,} in size")
        return value


# --------------------------------------------------------------------------- corpus
class StoryworldConfig(Section):
    stories: int | None = Field(None, description="Number of stories; default: enough for word_budget (or 2,000).")
    min_events: int = Field(3, ge=0, description="Fewest state-changing events per story.")
    max_events: int = Field(7, ge=1, description="Most state-changing events per story.")


class CorpusConfig(Section):
    source: Literal["storyworld", "files", "hub"] = Field("storyworld", description="Where the text comes from.")
    paths: list[str] = Field(default_factory=list, description="Files or directories of plain text (source=files).")
    format: Literal["auto", "lines", "paragraphs"] = Field(
        "auto", description="lines: one document per line; paragraphs: blank-line separated; auto: guess per file."
    )
    extensions: list[str] = Field(
        default_factory=lambda: [".txt", ".train"],
        description="File endings read from directories (BabyLM's text files end in .train).",
    )
    dataset: str | None = Field(None, description="Hub dataset name or local dataset path (source=hub).")
    dataset_config: str | None = Field(None, description="Dataset configuration name, if any.")
    split: str = Field("train", description="Dataset split (source=hub).")
    text_field: str = Field("text", description="Dataset column holding the text (source=hub).")
    word_budget: WordCount | None = Field(None, description="Keep documents until this many words (after fraction).")
    fraction: float = Field(1.0, gt=0, le=1, description="Fraction of documents kept, chosen with seed (paper: 0.9).")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed for storyworld and for the fraction sample.")
    storyworld: StoryworldConfig = Field(default_factory=StoryworldConfig)


# --------------------------------------------------------------------------- student
class TokenizerConfig(Section):
    vocab_size: int = Field(16_000, ge=300, description="BPE vocabulary size (paper: 16,000).")
    min_frequency: int = Field(2, ge=1, description="Minimum pair frequency for a merge (paper: 2).")


class StudentConfig(Section):
    preset: str = Field("gpt2-paper", description="Model shape preset: gpt2-paper, gpt2-tiny, gpt2-micro, llama-tiny, ...")
    n_layer: int | None = Field(None, ge=1, description="Override the preset's number of layers.")
    n_head: int | None = Field(None, ge=1, description="Override the preset's number of attention heads.")
    n_embd: int | None = Field(None, ge=1, description="Override the preset's width.")
    context_length: int | None = Field(
        None, ge=8, description="Override the preset's context length in tokens (paper: 512); packed sequences have this length."
    )


class PretrainConfig(Section):
    epochs: float = Field(10, gt=0, le=1000, description="Passes over the corpus, at most 1,000 (paper: 10; BabyLM cap).")
    max_words: WordCount | None = Field(None, description="Stop after this many words seen (repeats counted).")
    batch_size: int = Field(16, ge=1, description="Sequences per device per micro-batch (paper: 16).")
    grad_accum: int = Field(4, ge=1, description="Gradient accumulation steps (paper: 4).")
    learning_rate: float = Field(5e-4, gt=0, description="Peak learning rate (paper: 5e-4).")
    warmup_fraction: float = Field(0.01, ge=0, lt=1, description="Share of steps spent warming up (paper: 1 %).")
    schedule: Literal["linear", "cosine", "constant"] = Field("linear", description="Decay after warmup.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 where the hardware has it.")
    milestones: Literal["babylm", "every"] = Field("babylm", description="Checkpoint schedule kind.")
    milestone_unit: WordCount = Field(1_000_000, description="babylm schedule unit: 1M = the paper's; 1K scales it down.")
    milestone_every: WordCount | None = Field(None, description="Interval for milestones=every.")
    log_every: int = Field(10, ge=1, description="Optimizer steps between metric logs.")
    shuffle: bool = Field(True, description="Shuffle the packed sequences anew each epoch (seeded).")
    keep_resume_state: Literal["latest", "all"] = Field(
        "latest",
        description="Which checkpoints keep optimizer/RNG state for resuming: only the latest (saves disk) or all.",
    )
    skip_nonfinite: int = Field(
        0,
        ge=0,
        description="Optimizer steps with a non-finite loss or gradient that may be skipped (not applied) in the whole run; one more stops it (divergence) with the last good checkpoint kept.",
    )
    push_to_hub: str | None = Field(None, description="Hub repo to push each milestone to, as a branch named like it.")
    hub_private: bool = Field(True, description="Create the push_to_hub repository as private.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed for initialisation, data order and dropout.")


# --------------------------------------------------------------------------- teacher
class CriterionConfig(Section):
    """One rubric criterion: its scale is the range of its level keys (the paper's: 0..3)."""

    name: str = Field(description="Short key used in ratings files, e.g. 'coherence'.")
    title: str | None = Field(None, description="Name shown to the teacher, e.g. 'Narrative coherence'.")
    description: str = Field(description="What the criterion judges, in one sentence.")
    levels: dict[int, str] = Field(description="Score -> what that score means; consecutive integers.")
    weight: float = Field(1.0, ge=0, description="Weight in the normalised score (paper: equal).")


class TeacherConfig(Section):
    backend: Literal["heuristic", "openai", "transformers", "vllm"] = Field(
        "heuristic", description="heuristic: offline default; openai: any OpenAI-compatible server."
    )
    model: str | None = Field(
        None, description="Model name (openai/vllm; openai: default = the server's first model) or path/Hub id/GGUF file (transformers)."
    )
    base_url: str | None = Field(None, description="Server URL for backend=openai, e.g. http://127.0.0.1:8000/v1.")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable holding the API key (openai); unset: a dummy key for local servers."
    )
    temperature: float = Field(0.2, ge=0, description="Teacher sampling temperature (paper: 0.2).")
    max_tokens: int = Field(6, ge=1, description="Most new tokens in a teacher answer (paper: 6).")
    concurrency: int = Field(
        16,
        ge=1,
        description="Most requests in flight at once (openai); the number in flight adapts between 1 and this to what the server sustains.",
    )
    adapt_concurrency: bool = Field(
        True,
        description="Adapt the requests in flight to the server (openai): raise while answers stay fast, cut on timeouts and 429/5xx; false keeps exactly teacher.concurrency.",
    )
    timeout: float = Field(
        60.0, gt=0,
        description="Seconds a request may take in all before it is retried (openai: connecting, waiting and reading the whole answer, however slowly the server sends it).",
    )
    patience: float | None = Field(
        None,
        gt=0,
        description="openai: seconds without any answer from the server, while stories wait, before the rating stops with TeacherUnavailable (a stalled server); None: 2 x timeout.",
    )
    server: Literal["auto", "vllm", "llama.cpp", "llama-cpp-python", "transformers", "openai", "other"] = Field(
        "auto",
        description="openai: which server it is, which decides how constrained answers are asked for; auto: recognised once at start (GET /models, /version, /openapi.json), else other.",
    )
    max_retries: int = Field(5, ge=0, description="Retries on 429/5xx/timeouts/refused connections.")
    backoff: float = Field(0.5, ge=0, description="First retry waits up to this many seconds; doubles each retry (full jitter).")
    max_backoff: float = Field(30.0, ge=0, description="Longest wait between two retries, in seconds.")
    invalid_policy: Literal["exclude", "retry", "zero"] = Field(
        "exclude", description="What an unparseable answer does: excluded from the update, retried, or scored 0."
    )
    invalid_retries: int = Field(2, ge=0, description="Extra requests for an unparseable answer when invalid_policy=retry.")
    min_words: int = Field(
        3, ge=0, description="Continuations with fewer words get the lowest score on every criterion without asking the teacher (the rubric's 'shorter than a sentence' rule); empty ones always do."
    )
    expected_words: int = Field(80, ge=1, description="Story length the teacher is told to expect (paper: about 80 words).")
    expected_score: bool = Field(False, description="Score = probability-weighted mean digit (needs log-probs).")
    top_logprobs: int = Field(10, ge=1, le=20, description="Alternatives per answer token requested in expected-score mode.")
    batch_size: int = Field(16, ge=1, description="Stories per forward pass (transformers/vllm).")
    device: str = Field("auto", description="transformers backend: 'auto', 'cpu', 'cuda', 'cuda:1', ...")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("auto", description="Weights dtype (transformers/vllm).")
    gpu_memory_utilization: float = Field(
        0.25,
        gt=0,
        le=1,
        description="vllm: share of the device's memory for the engine (weights, activations, KV cache): of the GPU's memory on a GPU, of the machine's RAM on CPU (paper: 25 %, sharing with the student).",
    )
    enforce_eager: bool | None = Field(
        None,
        description="vllm: run the model without compiling it (no torch.compile, no CUDA graphs): starts in seconds instead of minutes, decodes slower on a GPU. null: on without a CUDA GPU, off with one.",
    )
    max_model_len: int | None = Field(
        None,
        ge=1,
        description="vllm: most tokens of prompt + answer; null: the model's own (Llama 3.1: 131,072, more KV cache than a small memory share holds; a rubric prompt with its story needs about 1,000).",
    )
    kv_cache_gib: float | None = Field(
        None,
        gt=0,
        description="vllm: KV cache size in GiB, instead of what gpu_memory_utilization leaves after the weights (vLLM's kv_cache_memory_bytes).",
    )
    cache: str | None = Field(None, description="SQLite cache file for ratings; none by default.")
    criteria: list[CriterionConfig] | None = Field(
        None, min_length=1, description="Rubric criteria (at least one); default (null): the paper's three."
    )
    template: str | None = Field(None, description="Path to a Jinja2 prompt template; replaces the built-in prompt.")
    prompt: Literal["placeholders", "example"] = Field(
        "placeholders",
        description="Built-in prompt: 'placeholders' describes the answer as '<readability> <coherence> <creativity>', no number to copy; 'example' is the earlier prompt ending 'Example answer: 1 2 3', which small judges copy.",
    )
    constrained: Constrained = Field(
        "auto",
        description="Decode only answers in the rubric's format, so none is invalid. transformers: on unless off; vllm: auto/regex '2 3 1', json_schema a JSON object; openai: what teacher.server honours (auto: regex on vLLM, a GBNF grammar on llama.cpp, json_schema on the OpenAI API, nothing on transformers serve or an unknown server); off: free answers.",
    )


# --------------------------------------------------------------------------- interact
class WatchConfig(Section):
    """``interact.watch``: a second opinion while the run trains (interact/watch.py). A held-out
    judge rates a share of the stories beside the trained-on teacher, cheap drift signals are
    measured on every step, and an alarm says when the score rose in a way nobody else saw.
    The defaults of the alarm's thresholds were chosen from measured runs (docs/interact.md,
    The watch; benchmarks/bench_watch.py)."""

    enabled: bool = Field(True, description="Watch the run (drift signals, the held-out judge, the alarm); false: nothing is measured and nothing is added to the step.")
    judge: Literal["auto", "none"] | TeacherConfig = Field(
        "auto",
        description="The held-out judge: a teacher config of its own (any backend), 'none', or 'auto': the built-in heuristic when the trained-on teacher is not it (an LLM), none when they would be the same judge.",
    )
    share: float = Field(0.5, gt=0, le=1, description="Share of each watched step's stories the held-out judge rates (at least 2 stories).")
    every: int = Field(1, ge=1, description="The held-out judge rates every Nth step (1: every step); drift signals are measured on every step.")
    baseline_steps: int = Field(3, ge=1, description="The first steps that make 'the start' every gain and drift is measured from.")
    window: int = Field(5, ge=1, description="The latest steps a signal is averaged over (its 'now').")
    patience: int = Field(3, ge=1, description="Consecutive steps a rule must hold before the alarm is raised.")
    confidence: float = Field(0.95, gt=0, lt=1, description="Coverage of the intervals the rules use (a rule holds when its whole interval lies past the threshold).")
    max_gap: float = Field(
        0.05,
        ge=0,
        description="Gap rule: the teacher's gain since the start minus the held-out judge's on the same stories (0..1 scores) above this, interval and all, raises the alarm.",
    )
    max_address_rise: float = Field(
        0.15,
        ge=0,
        description="Address rule: the share of stories that address the listener or grader (second person, praise, rate/score/grader/marks) risen above its start by more than this, interval and all.",
    )
    max_distinct_drop: float = Field(
        0.35,
        ge=0,
        le=1,
        description="Diversity rule: distinct bigrams (share of a step's bigrams that are distinct) fallen below (1 - this) x their start value.",
    )
    on_alarm: Literal["warn", "stop"] = Field(
        "warn",
        description="warn: the alarm goes to the log and the report, the run goes on; stop: the run saves its resume point and stops (exit code 2), naming the rule and the step.",
    )

    @field_validator("judge", mode="before")
    @classmethod
    def _judge(cls, value: Any) -> Any:
        # YAML's null and off mean no held-out judge; any other word is a mistake said plainly
        # (not pydantic's account of the union it tried).
        if value is None or value is False:
            return "none"
        if not isinstance(value, (str, dict, BaseModel)) or (isinstance(value, str) and value not in ("auto", "none")):
            raise ValueError("must be 'auto', 'none' or a teacher config (a mapping such as {backend: openai, base_url: ...})")
        return value


class InteractConfig(Section):
    algorithm: Literal["ppo", "rloo", "grpo"] = Field("ppo", description="RL objective.")
    prompt: str = Field(PAPER_PROMPT, description="The fixed story prompt (paper's).")
    prompts_file: str | None = Field(None, description="Text file, one prompt per line, instead of the fixed prompt.")
    prompts_dataset: str | None = Field(
        None, description="Hub dataset name or local dataset directory whose prompts_column holds the prompts."
    )
    prompts_column: str = Field("prompt", description="Dataset column with the prompts (prompts_dataset).")
    prompts_split: str = Field("train", description="Dataset split (prompts_dataset).")
    max_new_tokens: int = Field(90, ge=1, description="Most tokens per story (paper: 90).")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (paper: 1, pure sampling).")
    top_k: int = Field(0, ge=0, description="0 = off (paper).")
    top_p: float = Field(1.0, gt=0, le=1, description="1 = off (paper).")
    batch_size: int = Field(360, ge=1, description="Stories per RL step (paper: 360).")
    mini_batch_size: int = Field(
        360, ge=1, description="Stories per gradient step, at most batch_size; not given: batch_size (paper: one minibatch of 360)."
    )
    generation_chunk: int | None = Field(None, ge=1, description="Generate in chunks of this many stories (None: whole batch).")
    epochs: int = Field(4, ge=1, description="Optimisation epochs per batch (paper: 4 PPO epochs).")
    learning_rate: float = Field(1e-6, gt=0, description="Adam learning rate, no schedule (paper: 1e-6).")
    init_kl_coef: float = Field(0.2, ge=0, description="Initial KL coefficient (paper: 0.2).")
    adaptive_kl: bool = Field(True, description="Adaptive KL controller (paper: on).")
    target_kl: float = Field(6.0, gt=0, description="Adaptive controller's target KL (paper: 6).")
    kl_horizon: int = Field(10_000, ge=1, description="Adaptive controller's horizon (paper: 10,000).")
    cliprange: float = Field(0.2, gt=0, description="Policy ratio clip (paper: 0.2).")
    cliprange_value: float = Field(0.2, gt=0, description="Value clip (paper: 0.2).")
    vf_coef: float = Field(0.1, ge=0, description="Value-loss coefficient (paper: 0.1).")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount (paper: 1).")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda (paper: 0.95).")
    max_grad_norm: float | None = Field(None, gt=0, description="Gradient clipping; None = off (paper).")
    ratio_threshold: float = Field(10.0, gt=0, description="Skip a minibatch whose mean policy ratio exceeds this (TRL 0.9.4: 10).")
    group_size: int = Field(4, ge=2, description="Samples per prompt for rloo/grpo.")
    group_kl_coef: float = Field(
        0.0, ge=0, description="rloo/grpo: weight of the KL to the reference (rloo: in the reward; grpo: in the loss); 0 = off."
    )
    micro_batch_size: int | None = Field(
        None, ge=1, description="Split forward/backward passes into chunks this big (same gradients, less memory)."
    )
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto: bf16 autocast where the GPU has it.")
    skip_nonfinite: int = Field(
        0,
        ge=0,
        description="Gradient steps with a non-finite loss or gradient that may be skipped (not applied) in the whole run; one more, or non-finite logits, stops it (divergence) with the last good checkpoint or resume point kept.",
    )
    invalid_limit: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Most share of invalid ratings (unparseable answers, failed requests) over the last invalid_window steps; above it the run stops, progress saved (1: never).",
    )
    invalid_window: int = Field(10, ge=1, description="Steps over which invalid_limit is taken (fewer at the start of a run).")
    keep_resume_state: Literal["latest", "all"] = Field(
        "latest", description="Keep optimizer/RNG state in the latest checkpoint only (saves disk) or in all."
    )
    length_bonus: float = Field(0.4, ge=0, description="Length-bonus coefficient; 0 turns it off (paper: 0.4).")
    length_norm_words: int = Field(90, ge=1, description="Words that earn the full length bonus (paper: 90).")
    input_budget: WordCount = Field(1_000_000, description="Words shown to the student (paper: 1M).")
    generation_budget: WordCount = Field(100_000_000, description="Words the student may generate (BabyLM: 100M).")
    count_prompt: Literal["once", "per_episode"] = Field(
        "once", description="Count a distinct prompt's words once (paper) or every time it is shown."
    )
    checkpoint_every: WordCount = Field(100_000, description="Input words between checkpoints (paper: 100K).")
    max_steps: int | None = Field(None, ge=1, description="Stop after this many RL steps (None: budget decides).")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed for the prompt order and the story sampling.")
    watch: WatchConfig = Field(default_factory=WatchConfig)
    teacher_check: Literal["require", "allow", "skip"] = Field(
        "require",
        description="Check the teacher before the first step (saved in RUN/teacher_check/): require = a FAIL stops the run, allow = train whatever the verdict, skip = no check (--skip-teacher-check).",
    )

    @model_validator(mode="before")
    @classmethod
    def _whole_batch_by_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and "mini_batch_size" not in data and "batch_size" in data:
            data = {**data, "mini_batch_size": data["batch_size"]}
        return data

    @model_validator(mode="after")
    def _batches_nest(self) -> "InteractConfig":
        # A gradient step takes a mini-batch out of the batch, a forward pass a micro-batch
        # out of the mini-batch: a bigger one would silently mean the smaller one.
        if self.mini_batch_size > self.batch_size:
            raise ValueError(
                f"interact.mini_batch_size ({self.mini_batch_size}) must not exceed interact.batch_size ({self.batch_size})"
            )
        if self.micro_batch_size is not None and self.micro_batch_size > self.mini_batch_size:
            raise ValueError(
                f"interact.micro_batch_size ({self.micro_batch_size}) must not exceed interact.mini_batch_size ({self.mini_batch_size})"
            )
        return self


# --------------------------------------------------------------------------- evaluate / report
class EvaluateConfig(Section):
    data_dir: str | None = Field(
        None,
        description="BabyLM evaluation data: an evaluation_data directory, or its full_eval or fast_eval folder. "
        "None: the BabyLM tasks are reported absent (the storyworld probe and story quality still run).",
    )
    suite: Literal["fast", "full"] = Field(
        "fast", description="Which folder to read when data_dir holds both fast_eval and full_eval."
    )
    tasks: list[str] | None = Field(
        None,
        description="Zero-shot tasks to run (blimp, blimp_supplement, ewok, entity_tracking, wug_adj_nominalization, "
        "wug_past_tense, comps, reading, aoa, storyworld_entity_tracking); default: all.",
    )
    checkpoints: list[str] | None = Field(
        None,
        description="Checkpoints of a run to evaluate, by name (chck_20M, start); default: all. The other rows of "
        "results.json stay as they were.",
    )
    batch_size: int = Field(64, ge=1, description="Sequences per forward pass when scoring.")
    share_prefix: bool = Field(
        True, description="Run a context shared by several candidates once and reuse its key/value cache."
    )
    device: str = Field("auto", description="auto: cuda when available, else cpu; or any torch device string.")
    probe_items: int = Field(500, ge=0, description="storyworld entity-tracking items (0: off).")
    probe_seed: int = Field(10_000, ge=0, le=MAX_SEED, description="Seed for the held-out storyworld probe.")
    stories: int = Field(64, ge=0, description="Stories sampled per prompt for story quality (0: off).")
    story_prompt: str = Field(PAPER_PROMPT, description="Prompt the stories continue (paper's).")
    story_prompts_file: str | None = Field(
        None, description="Text file, one prompt per line, instead of story_prompt (N stories per prompt)."
    )
    story_max_new_tokens: int = Field(90, ge=1, description="Most new tokens per story (paper: 90).")
    story_batch_size: int = Field(64, ge=1, description="Stories generated per forward pass.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed for story sampling.")


class ReportConfig(Section):
    score: str = Field(
        "total",
        description="Score the equivalence uses: 'total' (sum of the criteria, the paper's 0..9) or a criterion name.",
    )
    equivalence_source: Literal["auto", "evaluate", "anthology"] = Field(
        "auto",
        description="evaluate: story scores of the evaluated pretraining checkpoints vs each run's final checkpoint; "
        "anthology: first vs last anthology_batches batches of each interaction run (the paper's table); "
        "auto: evaluate where those results exist, else anthology.",
    )
    anthology_batches: int = Field(10, ge=1, description="Batches averaged at the start and end of a run (paper: 10).")
    bootstrap: int = Field(1000, ge=0, description="Bootstrap resamples for intervals (0: no intervals).")
    confidence: float = Field(0.95, gt=0, lt=1, description="Coverage of the bootstrap intervals.")
    stories_shown: int = Field(2000, ge=0, description="Most anthology stories embedded in the story browser.")
    dpi: int = Field(110, ge=50, le=400, description="Resolution of the PNG figures.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed for the bootstrap and the browser's story sample.")


class ExperimentConfig(Section):
    """Everything about one experiment; each command reads the sections it needs."""

    name: str = Field("onceupon", description="Experiment name, for logs and reports.")
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    student: StudentConfig = Field(default_factory=StudentConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    interact: InteractConfig = Field(default_factory=InteractConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)


# --------------------------------------------------------------------------- loading
def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"])
    if not key.isprintable():  # a key holding a newline or a control character, shown escaped: one line
        key = key.encode("unicode_escape").decode("ascii")
    if error["type"] == "value_error" and isinstance(error.get("input"), dict):
        # a rule across a section's fields (a model validator): its message names the keys
        return error["msg"].removeprefix("Value error, ").rstrip(".")
    if error["type"] == "extra_forbidden":
        return f"unknown config key '{key}'"
    if error["type"] == "missing":
        return f"config key '{key}' is required"
    value = error.get("input")
    shown = repr(value) if not isinstance(value, dict) else "a mapping"
    return f"config key '{key}': {error['msg'].removeprefix('Value error, ').rstrip('.')} (got {shown})"


#: the largest config file read: a config is a few KB; a larger one is a mistake (a 50 MB
#: prompt pasted in took PyYAML minutes and a GB of memory before anything could be said)
MAX_CONFIG_CHARS = 1024**2


class _Twice(Exception):
    def __init__(self, key: Any, line: int):
        self.key, self.line = key, line


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping (a section or a
    setting written twice, where PyYAML silently keeps the last) is refused."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may repeat what it merges
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise _Twice(key, key_node.start_mark.line + 1)
            seen.add(key) if isinstance(key, (str, int, float, bool)) else None
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str) -> Any:
    """The value YAML ``text`` holds, within the bounds every file onceupon reads keeps
    (:func:`onceupon.files.checked_value`), no key twice; a UserError saying ``where`` otherwise.
    A syntax error is raised as ``yaml.YAMLError`` for the caller to word."""
    if len(text) > MAX_CONFIG_CHARS:
        raise UserError(f"{where} is {len(text) / 1024**2:,.0f} MiB, more than a config ever holds (1 MiB).")
    try:
        value = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except RecursionError:
        raise UserError(f"{where}: values are nested more than {MAX_DEPTH} deep.") from None
    except _Twice as e:
        raise UserError(f"{where}: the key {e.key!r} is given twice (the second at line {e.line}); give it once.") from None
    return checked_value(value, where)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise UserError(f"--set expects key=value, got '{item}'.")
    key, raw = item.split("=", 1)
    try:
        value = parse_yaml(raw, f"--set {key}") if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.strip().split(".")
    if not all(parts):
        raise UserError(f"--set key '{key}' is not a dotted config key like pretrain.epochs.")
    return parts, value


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = read_text_file(path)
    except UserError as e:  # missing, or not text
        raise UserError(f"Config file {e}") from None
    try:
        data = parse_yaml(text, f"Config file {path}")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"Config file {path} is not valid YAML{where}.") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"Config file {path} must be a mapping of sections, not a {type(data).__name__}.")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config (or the defaults), apply ``key=value`` overrides, validate."""
    data = read_yaml(path) if path else {}
    for item in overrides or []:
        parts, value = _parse_override(item)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        more = f" (and {e.error_count() - 1} more problems)" if e.error_count() > 1 else ""
        raise UserError(_describe(first) + more + ".") from None


def save_config(config: ExperimentConfig, run_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved configuration into the run directory: ``config.yaml`` to read, and
    the same in ``RUN/.config.yaml``, the run's own record, which ``--resume`` compares
    ``config.yaml`` with (see :func:`resume_config`).

    Secrets never live in the config (only the *names* of environment variables do), so the
    whole model can be written as is.
    """
    path = Path(run_dir) / name
    text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    atomic_write_text(path, text)
    if name == "config.yaml":
        atomic_write_text(Path(run_dir) / RUN_RECORD, text)
    return path


# --------------------------------------------------------------------------- resuming
#: the config a run was made with, as it last ran; config.yaml is compared with it on --resume
RUN_RECORD = ".config.yaml"

#: what ``--resume`` may change: how a run reaches and waits for its teacher, how it logs and
#: keeps files, and the sections it does not read. Anything else alters the run itself (its
#: data, model, schedule, rewards or randomness), so a changed value would leave a run made
#: half one way and half another.
RESUMABLE_KEYS = (
    "name",
    "teacher.base_url",
    "teacher.api_key_env",
    "teacher.timeout",
    "teacher.patience",
    "teacher.max_retries",
    "teacher.backoff",
    "teacher.max_backoff",
    "teacher.concurrency",
    "teacher.adapt_concurrency",
    "teacher.cache",
    "pretrain.log_every",
    "pretrain.keep_resume_state",
    "pretrain.push_to_hub",
    "pretrain.hub_private",
    "interact.keep_resume_state",
    "interact.watch.on_alarm",  # a run stopped by its alarm may go on once someone looked
    # When a run stops, never what it learns: up to the step where one of them stops a run,
    # it trains the same whatever their values (a non-finite step is never applied).
    "pretrain.skip_nonfinite",
    "interact.skip_nonfinite",
    "interact.invalid_limit",
    "interact.invalid_window",
    "evaluate",
    "report",
)


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two dumped configs (lists compared whole)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in dict.fromkeys([*a, *b]) for d in _differences(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _resumable(key: str) -> bool:
    return any(key == allowed or key.startswith(allowed + ".") for allowed in RESUMABLE_KEYS)


def resume_changes(saved: ExperimentConfig, given: ExperimentConfig) -> list[str]:
    """The keys ``given`` changes from ``saved`` that ``--resume`` may not change (not in
    :data:`RESUMABLE_KEYS`), in config order; [] when the run may continue with ``given``."""
    return [key for key in _differences(saved.model_dump(mode="json"), given.model_dump(mode="json")) if not _resumable(key)]


def resume_config(run_dir: str | Path, given: ExperimentConfig | None = None) -> ExperimentConfig:
    """The config a ``--resume`` of ``run_dir`` continues with: ``given`` (the command's
    ``--config``/``--set``, see :func:`given_on_resume`) or else the run's ``config.yaml``,
    checked against the config the run was made with (``RUN/.config.yaml``; a run from before
    that record: ``config.yaml``). A change to a key outside :data:`RESUMABLE_KEYS` is one
    sentence naming the keys; an allowed change is written to both files and used."""
    run_dir = Path(run_dir)
    record = run_dir / RUN_RECORD
    saved = load_config(record if record.is_file() else run_dir / "config.yaml")
    given = given or load_config(run_dir / "config.yaml")
    changed = resume_changes(saved, given)
    if changed:
        old, new = saved.model_dump(mode="json"), given.model_dump(mode="json")
        first = changed[0]
        for part in first.split("."):
            old, new = old.get(part) if isinstance(old, dict) else None, new.get(part) if isinstance(new, dict) else None
        more = f" (and {', '.join(changed[1:])})" if len(changed) > 1 else ""
        raise UserError(
            f"--resume of {run_dir} would change {first} from {old!r} to {new!r}{more}, which alters the run; "
            f"undo that change or start a new run (--resume may change only {', '.join(RESUMABLE_KEYS)})."
        )
    if given != saved:
        save_config(given, run_dir)
    return given


def given_on_resume(run_dir: str | Path, path: str | Path | None, overrides: list[str] | None) -> ExperimentConfig | None:
    """What ``--resume RUN`` was given: ``--config`` and ``--set`` on top of ``RUN/config.yaml``
    (``--set`` alone changes the run's own config), None when neither is given."""
    if path is None and not overrides:
        return None
    if path is None and not (Path(run_dir) / "config.yaml").is_file():
        raise UserError(f"{run_dir} holds no config.yaml to apply --set to; is it a run directory?")
    return load_config(path or Path(run_dir) / "config.yaml", overrides)


def reference_markdown() -> str:
    """The configuration reference as Markdown tables, one per section (used by docs/configuration.md
    and by ``onceupon config --reference``), generated from the field declarations above so
    that it cannot drift from the code."""
    lines: list[str] = []
    defaults = ExperimentConfig()

    def section(title: str, model: type[BaseModel], value: BaseModel) -> None:
        nested: list[tuple[str, type[BaseModel], BaseModel]] = []
        lines.extend([f"### `{title}`", "", "| key | default | meaning |", "| --- | --- | --- |"])
        for name, field in model.model_fields.items():
            current = getattr(value, name)
            if isinstance(current, BaseModel):
                nested.append((f"{title}.{name}", type(current), current))
                continue
            shown = yaml.safe_dump(
                current if not isinstance(current, list) or not current or not isinstance(current[0], BaseModel)
                else [c.model_dump() for c in current],
                default_flow_style=True, width=10_000,
            ).strip().removesuffix("...").strip()
            if len(shown) > 60:
                shown = shown[:57] + "..."
            desc = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | `{shown}` | {desc} |")
        lines.append("")
        for t, m, v in nested:
            section(t, m, v)

    for name in ExperimentConfig.model_fields:
        value = getattr(defaults, name)
        if isinstance(value, BaseModel):
            section(name, type(value), value)
    return "\n".join(lines)
