"""The README is the front door: its set-up commands, test command and config reference must
stay true."""

import re
from pathlib import Path

from onceupon.config import reference_markdown

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_config_reference_is_current():
    block = re.search(r"<!-- config-reference:start -->\n(.*?)<!-- config-reference:end -->", README, re.S)
    assert block, "README lost its config reference markers"
    assert block.group(1).strip() == reference_markdown().strip(), (
        "README config reference is stale: regenerate it with `onceupon config --reference`"
    )


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = "python -m pytest -q"
    assert f"\n{command}" in README
    assert ci.rstrip().splitlines()[-1].strip() == command
