"""Student model presets, built with transformers so every checkpoint is a standard model.

``gpt2-paper`` is the paper's shape (12 layers, 12 heads, width 768, context 512); the tiny
presets make CPU runs and tests quick; ``llama-*`` presets give a Llama-style alternative
(RMSNorm, rotary positions, SwiGLU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from onceupon.config import StudentConfig
from onceupon.errors import UserError

if TYPE_CHECKING:  # transformers is imported lazily: checking a preset should not cost seconds
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class Shape:
    arch: str  # "gpt2" or "llama"
    n_layer: int
    n_head: int
    n_embd: int
    context_length: int


PRESETS: dict[str, Shape] = {
    "gpt2-paper": Shape("gpt2", 12, 12, 768, 512),
    "gpt2-mini": Shape("gpt2", 6, 8, 512, 512),
    "gpt2-tiny": Shape("gpt2", 4, 4, 256, 256),
    "gpt2-micro": Shape("gpt2", 2, 2, 64, 128),
    "llama-small": Shape("llama", 12, 12, 768, 512),
    "llama-tiny": Shape("llama", 4, 4, 256, 256),
}


def resolve_shape(cfg: StudentConfig) -> Shape:
    if cfg.preset not in PRESETS:
        raise UserError(f"Unknown student preset '{cfg.preset}'; choose one of {', '.join(PRESETS)}.")
    base = PRESETS[cfg.preset]
    shape = Shape(
        base.arch,
        cfg.n_layer or base.n_layer,
        cfg.n_head or base.n_head,
        cfg.n_embd or base.n_embd,
        cfg.context_length or base.context_length,
    )
    if shape.n_embd % shape.n_head:
        raise UserError(f"The student's width {shape.n_embd} is not divisible by its {shape.n_head} heads.")
    return shape


def build_student(cfg: StudentConfig, tokenizer) -> PreTrainedModel:
    """A freshly initialised student whose vocabulary and special tokens match ``tokenizer``."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    shape = resolve_shape(cfg)
    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if shape.arch == "gpt2":
        config = GPT2Config(
            n_layer=shape.n_layer,
            n_head=shape.n_head,
            n_embd=shape.n_embd,
            n_positions=shape.context_length,
            **ids,
        )
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(
            num_hidden_layers=shape.n_layer,
            num_attention_heads=shape.n_head,
            num_key_value_heads=shape.n_head,
            hidden_size=shape.n_embd,
            intermediate_size=int(8 * shape.n_embd / 3 + 63) // 64 * 64,
            max_position_embeddings=shape.context_length,
            tie_word_embeddings=True,
            **ids,
        )
        model = LlamaForCausalLM(config)
    return model


def context_length(model: PreTrainedModel) -> int:
    c = model.config
    return getattr(c, "n_positions", None) or c.max_position_embeddings
