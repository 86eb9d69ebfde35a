"""A student checkpoint on disk: saving one (weights, tokenizer) and loading it back.

The directory itself (``onceupon.json``, ``trainer_state/``, atomic write, listing in order)
is the run machinery's: :mod:`onceupon.lifecycle.checkpoints`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

from onceupon import preflight
from onceupon.errors import UserError
from onceupon.files import json_object, read_text_file
from onceupon.lifecycle.checkpoints import META_FILE, CheckpointMeta, write_checkpoint
from onceupon.schemas.run import read_checkpoint_meta

#: a config.json is a few KB; a larger one is not a model's config
MAX_CONFIG_CHARS = 1024**2
#: the shape's fields, as a sentence names them
SHAPE_WORDS = {"model_type": "architecture", "architectures": "model class", "layers": "layers",
               "width": "width", "vocab_size": "vocabulary"}  # fmt: skip


def model_shape(config, architectures: list[str] | None = None) -> dict:
    """What a transformers config says about the model's shape, in the same words for every
    architecture (``num_hidden_layers`` and ``hidden_size`` are mapped to GPT-2's ``n_layer``
    and ``n_embd`` by its config class)."""
    return {
        "model_type": config.model_type,
        "architectures": list(architectures if architectures is not None else config.architectures or []),
        "layers": int(config.num_hidden_layers),
        "width": int(config.hidden_size),
        "vocab_size": int(config.vocab_size),
    }


def save_checkpoint(
    directory: str | Path,
    model,
    tokenizer,
    meta: CheckpointMeta,
    write_state: Callable[[Path], None] | None = None,
) -> Path:
    """Write model, tokenizer, metadata and (via ``write_state(dir)``) resume state atomically
    (a full disk is one sentence and leaves no partial directory)."""

    def write_files(tmp: Path) -> None:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            from onceupon.student.tokenizer import save_tokenizer

            save_tokenizer(tokenizer, tmp)

    shape = model_shape(model.config, [type(model).__name__])  # what save_pretrained writes as architectures
    return write_checkpoint(directory, write_files, replace(meta, shape=shape), write_state)


def check_config(directory: str | Path, fix: str) -> None:
    """Before any weights are read: the checkpoint's ``config.json`` is one JSON object within
    bounds, transformers can read it, it describes the model onceupon recorded when it wrote
    the checkpoint (architecture, layers, width, vocabulary: a config edited or copied from
    another model would otherwise load, with layers made up at random or until memory runs
    out), and a model that size fits in this machine's memory at all. Each is one sentence
    ending in ``fix``."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        return  # the loader says so, in its words
    check_json_files(directory, fix)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(directory)
        shape = model_shape(config)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"The checkpoint {directory} has a config.json transformers cannot read ({_first_line(e)}); {fix}.") from None
    meta = directory / META_FILE
    recorded = read_checkpoint_meta(meta).shape if meta.is_file() else None
    if recorded:
        differ = [f"{SHAPE_WORDS[k]} {shape[k]} where onceupon wrote {recorded[k]}"
                  for k in SHAPE_WORDS if k in recorded and shape[k] != recorded[k]]  # fmt: skip
        if differ:
            raise UserError(
                f"The checkpoint {directory} has a config.json that is not the model onceupon saved there "
                f"({'; '.join(differ)}); {fix}."
            )
    # a floor: the embeddings and ~12 x width^2 per layer, at 2 bytes a parameter
    params = shape["vocab_size"] * shape["width"] + shape["layers"] * 12 * shape["width"] ** 2
    preflight.memory_for(2 * params, f"The checkpoint {directory} (by its config.json)")


def load_model(directory: str | Path, fix: str, **kwargs):
    """``AutoModelForCausalLM.from_pretrained(directory, **kwargs)``; weights that cannot be read
    (a truncated copy, a garbage file, a missing shard) are one sentence ending in ``fix``, what
    the user can do. Every stage that loads a student goes through here."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM

    from transformers.utils import logging as hf_logging

    check_config(directory, fix)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its report of missing weights: said below in one sentence
    try:
        model, loading = AutoModelForCausalLM.from_pretrained(directory, output_loading_info=True, **kwargs)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"The checkpoint {directory} cannot be read ({_first_line(e)}); {fix}.") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    # weights the config names but the files lack would be made up at random and used as if trained
    missing = sorted(loading.get("missing_keys") or [])
    mismatched = loading.get("mismatched_keys") or []
    if missing or mismatched:
        what = f"no weights for {missing[0]}" if missing else f"weights of another shape for {mismatched[0][0]}"
        more = len(missing) + len(mismatched) - 1
        raise UserError(
            f"The checkpoint {directory} does not hold the model its config.json describes ({what}"
            f"{f' and {more} more' if more else ''}); {fix}."
        )
    return model


def load_checkpoint_tokenizer(directory: str | Path, fix: str):
    """``AutoTokenizer.from_pretrained(directory)``, with the same one-sentence failure; its
    JSON files are checked first (:func:`check_json_files`)."""
    from transformers import AutoTokenizer

    check_json_files(directory, fix)
    try:
        return AutoTokenizer.from_pretrained(directory)
    except Exception as e:  # noqa: BLE001 (a tokenizer.json of the wrong structure fails with TypeError, KeyError, ... or tokenizers' bare Exception)
        raise UserError(f"The checkpoint {directory} cannot be read ({type(e).__name__}: {_first_line(e)}); {fix}.") from None


def check_json_files(directory: str | Path, fix: str) -> None:
    """Every JSON file at the top of a checkpoint (config, tokenizer, generation config) is one
    JSON object within the bounds every file keeps (:func:`onceupon.files.json_object`): the
    loaders would otherwise meet a list, a key twice or a file nested thousands deep with a
    TypeError, an AttributeError or a RecursionError."""
    for path in sorted(Path(directory).glob("*.json")):
        limit = {"limit": MAX_CONFIG_CHARS} if path.name == "config.json" else {}
        json_object(read_text_file(path), str(path), f"; {fix}", **limit)


def check_weights(directory: str | Path, fix: str) -> None:
    """Refuse a checkpoint whose safetensors files cannot be read, before any work: reading
    each file's header is cheap and sees a truncated copy as well as a garbage file."""
    from safetensors import SafetensorError, safe_open

    check_config(directory, fix)
    for path in sorted(Path(directory).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as e:
            raise UserError(f"The model weights {path} cannot be read ({_first_line(e)}); {fix}.") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
