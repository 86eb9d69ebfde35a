"""A chat model loaded in-process with transformers: a local directory, a Hub id, or a GGUF file.

Stories are rated in batches of ``batch_size`` (left padding, one ``generate`` call per
batch) on the GPU when there is one, else the CPU. The model must have a chat template.
GGUF files (``teacher.model: path/to/model.gguf`` or ``owner/repo:file.gguf`` on the Hub) are
de-quantised by transformers on load, which needs the optional ``gguf`` package.

Answers are constrained to the rubric's format by default (``teacher.constrained``, any
value but ``off``): a logits processor (teacher/constrain.py) lets through only tokens that
keep the answer a prefix of ``<readability> <coherence> <creativity>``, then the end token, so
every answer parses. ``max_tokens`` is then raised, if needed, to fit the longest answer.

Expected-score mode reads the raw next-token logits of each answer token (before
temperature), so the probabilities are the model's own, as a server's ``top_logprobs`` are.
Constrained, the alternatives at each number are exactly the digits the format allows there,
so each criterion's expectation is the model's digit distribution renormalised over its scale.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from onceupon.config import TeacherConfig
from onceupon.errors import UserError
from onceupon.teacher.base import Rating, Story
from onceupon.teacher.constrain import AnswerFormat, TokenConstraint, answer_processor
from onceupon.teacher.parsing import rating_from_answer
from onceupon.teacher.rubric import Rubric


def split_model_spec(spec: str) -> tuple[str, str | None]:
    """(directory or Hub id, GGUF file name or None) from ``teacher.model``."""
    if not spec.lower().endswith(".gguf"):
        return spec, None
    path = Path(spec)
    if path.is_file():
        return str(path.parent), path.name
    if ":" in spec:  # owner/repo:file.gguf, as transformers serve and llama.cpp write it
        repo, name = spec.rsplit(":", 1)
        return repo, name
    raise UserError(f"GGUF file {spec} does not exist (use a local path or owner/repo:file.gguf).")


class TransformersBackend:
    def __init__(self, cfg: TeacherConfig, rubric: Rubric):
        if not cfg.model:
            raise UserError("teacher.backend=transformers needs teacher.model (a directory, Hub id or GGUF file).")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source, gguf_file = split_model_spec(cfg.model)
        if gguf_file and importlib.util.find_spec("gguf") is None:
            raise UserError("Loading a GGUF teacher needs the gguf package: pip install gguf (or 'onceupon[gguf]').")
        if (source.startswith((".", "/", "~")) or Path(source).exists()) and not Path(source).expanduser().is_dir():
            raise UserError(f"Teacher model directory {source} does not exist.")
        self.cfg, self.rubric = cfg, rubric
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
        )
        dtype = "auto" if cfg.dtype == "auto" else getattr(torch, cfg.dtype)
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            self.model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise UserError(f"Cannot load the teacher model {cfg.model}: {str(e).splitlines()[0]}") from None
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError(f"The teacher model {cfg.model} has no chat template; use an instruction-tuned chat model.")
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.constraint = None if cfg.constrained == "off" else self._constraint(cfg)
        mode = ("|expected" if cfg.expected_score else "") + ("|constrained" if self.constraint else "")
        self.identity = f"transformers:{cfg.model}|t={cfg.temperature}|max_tokens={cfg.max_tokens}{mode}"

    def _constraint(self, cfg: TeacherConfig) -> TokenConstraint:
        # Only tokens generate() stops on may end an answer, or it would go on after the end.
        eos = self.model.generation_config.eos_token_id
        eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        if not eos_ids and self.tokenizer.eos_token_id is not None:
            eos_ids = [self.tokenizer.eos_token_id]
        try:
            return TokenConstraint(self.tokenizer, AnswerFormat(self.rubric), eos_ids)
        except ValueError as e:
            raise UserError(f"Cannot constrain the answers of {cfg.model} ({e}); set teacher.constrained=off.") from None

    def rate(self, stories: list[Story]) -> list[Rating]:
        out: list[Rating] = []
        for start in range(0, len(stories), self.cfg.batch_size):
            out.extend(self._rate_batch(stories[start : start + self.cfg.batch_size]))
        return out

    def _rate_batch(self, stories: list[Story]) -> list[Rating]:
        import torch

        cfg, tok = self.cfg, self.tokenizer
        texts = [tok.apply_chat_template(self.rubric.messages(s), add_generation_prompt=True, tokenize=False) for s in stories]
        # The chat template already writes any begin-of-text token it wants.
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sampling = {"do_sample": True, "temperature": cfg.temperature, "top_k": 0, "top_p": 1.0} if cfg.temperature > 0 else {"do_sample": False}
        max_new_tokens = cfg.max_tokens
        if self.constraint is not None:
            prompt_length = enc["input_ids"].shape[1]
            sampling["logits_processor"] = [answer_processor(self.constraint, prompt_length)]
            sampling["eos_token_id"] = self.constraint.eos_ids
            max_new_tokens = max(max_new_tokens, self.constraint.max_new_tokens)
        with torch.inference_mode():
            gen = self.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id,
                return_dict_in_generate=True,
                output_logits=cfg.expected_score,
                **sampling,
            )
        new = gen.sequences[:, enc["input_ids"].shape[1] :]
        ratings = []
        for row in range(len(stories)):
            raw = tok.decode(new[row], skip_special_tokens=True)
            logprobs = (lambda row=row: self._token_logprobs(gen.logits, new, row)) if cfg.expected_score else None
            ratings.append(rating_from_answer(raw, self.rubric, logprobs))
        return ratings

    def _token_logprobs(self, logits, new, row: int) -> list[tuple[str, float, dict[str, float]]]:
        """The answer as (token, log-prob, {alternative: log-prob}): the top alternatives, or,
        constrained, every token the format allowed at that step."""
        import torch

        tok = self.tokenizer
        special = set(tok.all_special_ids)
        tokens = []
        for step, step_logits in enumerate(logits):
            token_id = int(new[row, step])
            if token_id in special:
                break
            logprobs = torch.log_softmax(step_logits[row].float(), dim=-1)
            if self.constraint is not None:
                before, _ = self.constraint.text_of(new[row, :step].tolist())
                alternatives = self.constraint.alternatives(before, logprobs)
            else:
                top = torch.topk(logprobs, self.cfg.top_logprobs)
                alternatives = {tok.decode([int(i)]): float(lp) for lp, i in zip(top.values, top.indices)}
            tokens.append((tok.decode([token_id]), float(logprobs[token_id]), alternatives))
        return tokens

    def close(self) -> None:
        self.model = None  # let the memory go with the teacher
