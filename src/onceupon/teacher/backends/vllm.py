"""In-process vLLM as the teacher (``pip install onceupon[vllm]``, GPU only), the paper's setup.

All stories of a call go to ``LLM.chat`` at once and vLLM schedules them itself, so
``batch_size`` does not apply. Prefix caching is on: every request starts with the same
rubric text, whose KV cache is then computed once. ``gpu_memory_utilization`` (default 0.25,
the paper's share) leaves the rest of the GPU to the student when both share one device.

Answers are constrained to the rubric's format by default (``teacher.constrained``): vLLM's
structured outputs decode only answers matching the format's regex (``auto``, ``regex``:
``2 3 1``) or JSON schema (``json_schema``: ``{"readability": 2, ...}``). vLLM 0.10.2 renamed
``GuidedDecodingParams`` (``SamplingParams.guided_decoding``) to ``StructuredOutputsParams``
(``SamplingParams.structured_outputs``) and 0.12 removed the old name; both are handled.
In expected-score mode vLLM returns the model's raw log-probabilities (before the format's
mask), and the allowed digits among the top ``top_logprobs`` are renormalised as usual.
(Written from vLLM's documentation: vLLM needs a GPU and is not exercised by the test suite.)

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
            raise UserError("teacher.backend=vllm needs vLLM on a GPU machine: pip install 'onceupon[vllm]'.")
        if not cfg.model:
            raise UserError("teacher.backend=vllm needs teacher.model (a Hub id or a local directory).")
        from vllm import LLM, SamplingParams

        self.cfg, self.rubric = cfg, rubric
        try:
            self.llm = LLM(
                model=cfg.model,
                dtype=cfg.dtype,
                gpu_memory_utilization=cfg.gpu_memory_utilization,
                enable_prefix_caching=True,
            )
        except (OSError, ValueError, RuntimeError) as e:
            raise UserError(f"vLLM could not load the teacher model {cfg.model}: {str(e).splitlines()[0]}") from None
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
        self.llm = None


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
