"""The README is the front door and docs/ holds the guides: the set-up commands, the test
command, the links between pages and the generated configuration reference must stay true."""

import re
from pathlib import Path

from onceupon.config import reference_markdown

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CONFIG_PAGE = ROOT / "docs" / "configuration.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_config_reference_is_current():
    page = CONFIG_PAGE.read_text(encoding="utf-8")
    block = re.search(r"<!-- config-reference:start -->\n(.*?)<!-- config-reference:end -->", page, re.S)
    assert block, "docs/configuration.md lost its config reference markers"
    assert block.group(1).strip() == reference_markdown().strip(), (
        "docs/configuration.md is stale: regenerate it with "
        "`python -c 'import tests.test_readme as t; t.regenerate()'` (or paste `onceupon config --reference`)"
    )


def regenerate() -> None:
    """Rewrite the generated block of docs/configuration.md from config.py."""
    page = CONFIG_PAGE.read_text(encoding="utf-8")
    new = re.sub(
        r"(<!-- config-reference:start -->\n).*?(<!-- config-reference:end -->)",
        lambda m: m.group(1) + reference_markdown().strip() + "\n" + m.group(2),
        page,
        flags=re.S,
    )
    CONFIG_PAGE.write_text(new, encoding="utf-8")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = "python -m pytest -q"
    assert f"\n{command}" in README
    assert ci.rstrip().splitlines()[-1].strip() == command


def test_readme_states_no_test_count():
    """A count of tests is stale after the next commit that adds one; pytest prints the true one."""
    assert not re.search(r"\b\d[\d,]* tests\b", README), "the README states a test count; say what the suite covers instead"


def test_readme_is_a_front_page_that_links_every_guide():
    assert len(README) < 12_000, "the README is a front page; stage details belong in docs/"
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)\)", README))
    guides = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert guides <= linked, f"guides the README does not link: {sorted(guides - linked)}"


def test_relative_links_resolve():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to missing {target}"


def test_docs_stand_alone():
    """What code and docs cite is in the repository: nothing points at files outside it."""
    for path in [*PAGES, *(ROOT / "src").rglob("*.py"), *(ROOT / "src").rglob("*.j2")]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"REFERENCE\.md|DESIGN\.md|\.\./shared", text), f"{path.relative_to(ROOT)} cites a file outside the repository"
