"""Where story prompts come from: the paper's fixed prompt, a text file, or a dataset column.

Prompts are handed out in a deterministic order that depends only on the seed and on how many
prompts were drawn so far, so a resumed run draws exactly the prompts the uninterrupted run
would have drawn (the position is the only state to save).
"""

from __future__ import annotations

import random
from pathlib import Path

from onceupon.config import InteractConfig
from onceupon.errors import UserError
from onceupon.schemas.stories import read_prompts_file


def load_prompts(cfg: InteractConfig) -> list[str]:
    """The prompt pool: a dataset column, else a text file (one prompt a line), else the fixed prompt."""
    if cfg.prompts_dataset and cfg.prompts_file:
        raise UserError("Give interact.prompts_file or interact.prompts_dataset, not both.")
    if cfg.prompts_file:
        return read_prompts_file(cfg.prompts_file)
    if cfg.prompts_dataset:
        return _dataset_prompts(cfg)
    if not cfg.prompt.strip():
        raise UserError("interact.prompt is empty; give a story prompt.")
    return [cfg.prompt]


def _dataset_prompts(cfg: InteractConfig) -> list[str]:
    import datasets

    source = cfg.prompts_dataset
    try:
        if Path(source).is_dir():
            data = datasets.load_from_disk(source)
            if isinstance(data, datasets.DatasetDict):
                if cfg.prompts_split not in data:
                    raise UserError(f"Dataset {source} has no split '{cfg.prompts_split}'.")
                data = data[cfg.prompts_split]
        else:
            data = datasets.load_dataset(source, split=cfg.prompts_split)
    except UserError:
        raise
    except Exception as e:  # the datasets library raises many types for "not found"
        raise UserError(f"Cannot load prompts dataset '{source}': {type(e).__name__}.") from None
    if cfg.prompts_column not in data.column_names:
        raise UserError(
            f"Prompts dataset {source} has no column '{cfg.prompts_column}' (columns: {', '.join(data.column_names)})."
        )
    prompts = [str(p).strip() for p in data[cfg.prompts_column] if p is not None and str(p).strip()]
    if not prompts:
        raise UserError(f"Column '{cfg.prompts_column}' of {source} holds no prompt.")
    return prompts


class PromptSource:
    """Deal prompts in passes over the pool; each pass is a fresh seeded shuffle.

    With a single prompt (the paper's setting) every episode gets that prompt.
    """

    def __init__(self, prompts: list[str], seed: int, drawn: int = 0):
        self.prompts = prompts
        self.seed = seed
        self.drawn = drawn  # prompts handed out so far: the whole state
        self._cached: tuple[int, list[int]] = (-1, [])

    def _order(self, pass_index: int) -> list[int]:
        if self._cached[0] != pass_index:
            order = list(range(len(self.prompts)))
            random.Random(f"{self.seed}-{pass_index}").shuffle(order)
            self._cached = (pass_index, order)
        return self._cached[1]

    def take(self, n: int) -> list[str]:
        out = []
        for k in range(self.drawn, self.drawn + n):
            pass_index, pos = divmod(k, len(self.prompts))
            out.append(self.prompts[self._order(pass_index)[pos]])
        self.drawn += n
        return out
