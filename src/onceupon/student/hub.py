"""Optional upload of milestone checkpoints to the Hugging Face Hub.

BabyLM stores a model's milestones as branches of one Hub repository (``chck_1M``,
``chck_2M``, ...), and the evaluation pipeline loads them with ``revision=``. With
``pretrain.push_to_hub: user/repo`` every checkpoint directory is uploaded, without its
resume state, to the branch named like the directory.

Which checkpoints are already on the Hub is recorded in ``RUN/hub_pushed.json``, so a run
resumed after a crash or a failed upload pushes whatever is still missing. The token comes
from the usual place (``HF_TOKEN`` or ``hf auth login``) and is never written anywhere by us.
"""

from __future__ import annotations

import json
from pathlib import Path

from onceupon.errors import UserError
from onceupon.files import atomic_write_json
from onceupon.lifecycle.checkpoints import STATE_DIR, list_checkpoints

PUSHED_FILE = "hub_pushed.json"


def _reason(error: Exception) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return first.rstrip(".")


def check_access(repo: str, private: bool = True) -> None:
    """Fail before training starts when the repository cannot be written to."""
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        api.whoami()
        api.create_repo(repo, private=private, exist_ok=True)
    except Exception as e:  # any failure here means no checkpoint could be pushed later
        raise UserError(f"Cannot push to the Hugging Face Hub repository '{repo}': {_reason(e)}.") from None


def _pushed(run_dir: Path) -> list[str]:
    path = run_dir / PUSHED_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def push_checkpoint(checkpoint: Path, repo: str) -> None:
    """Upload one checkpoint directory to the branch named like it."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_branch(repo, branch=checkpoint.name, exist_ok=True)
    api.upload_folder(
        repo_id=repo,
        folder_path=checkpoint,
        revision=checkpoint.name,
        ignore_patterns=[f"{STATE_DIR}/*", f"{STATE_DIR}/**"],
        commit_message=f"onceupon checkpoint {checkpoint.name}",
    )


def push_pending(run_dir: str | Path, repo: str) -> list[str]:
    """Push every complete checkpoint of the run not yet on the Hub; returns their names."""
    run_dir = Path(run_dir)
    done = _pushed(run_dir)
    new: list[str] = []
    for checkpoint in list_checkpoints(run_dir):
        if checkpoint.name in done:
            continue
        try:
            push_checkpoint(checkpoint, repo)
        except Exception as e:
            raise UserError(
                f"Uploading {checkpoint.name} to the Hugging Face Hub repository '{repo}' failed "
                f"({_reason(e)}); the checkpoint is safe on disk and --resume will push it again."
            ) from None
        done.append(checkpoint.name)
        new.append(checkpoint.name)
        atomic_write_json(run_dir / PUSHED_FILE, done)
    return new
