"""The student's tokenizer: byte-level BPE trained on the student's own corpus.

Saved as a fast tokenizer that adds a begin-of-sequence token to every text (the BabyLM
evaluation scores a sentence's first token only when a BOS precedes it), with pad, end,
unknown and mask tokens set, and left padding so batched generation continues the prompt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from onceupon.errors import UserError
from onceupon.files import atomic_write_text

BOS, PAD, EOS, UNK, MASK = "<s>", "<pad>", "</s>", "<unk>", "<mask>"
SPECIAL_TOKENS = [BOS, PAD, EOS, UNK, MASK]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 16_000, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``texts`` and wrap it for transformers."""
    core = Tokenizer(models.BPE(unk_token=UNK))
    # No prefix space: "Once" at the start of a text and " Once" inside it stay distinct,
    # exactly as GPT-2 does.
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    seen = {"any": False}

    def iterate():
        for text in texts:
            if text.strip():
                seen["any"] = True
                yield text

    core.train_from_iterator(iterate(), trainer=trainer)
    if not seen["any"]:
        raise UserError("Cannot train a tokenizer on an empty corpus.")
    bos_id = core.token_to_id(BOS)
    core.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    return wrap(core)


def wrap(core: Tokenizer) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        mask_token=MASK,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    return tok


#: The class name written into ``tokenizer_config.json``. transformers 5 writes its own
#: backend class (``TokenizersBackend``), which transformers 4 (used by the official BabyLM
#: evaluation pipeline and lm-eval-harness) cannot resolve; ``PreTrainedTokenizerFast`` is
#: understood by both and loads the same ``tokenizer.json``.
PORTABLE_CLASS = "PreTrainedTokenizerFast"


def save_tokenizer(tokenizer, directory: str | Path) -> None:
    """``save_pretrained`` plus a portable ``tokenizer_class`` so both transformers 4 and 5
    load the tokenizer with ``AutoTokenizer``."""
    directory = Path(directory)
    tokenizer.save_pretrained(directory)
    config_path = directory / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["tokenizer_class"] = PORTABLE_CLASS
        atomic_write_text(config_path, json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def load_tokenizer(directory: str | Path) -> PreTrainedTokenizerFast:
    """Load a tokenizer saved by :func:`save_tokenizer` (or any checkpoint's)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))
