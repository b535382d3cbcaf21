"""The README and docs/ stay true to the tree: every relative link resolves (the file, and the
heading an anchor names), every repository path they quote exists, and every `pricer` verb the
README names is a real command."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
VERB = re.compile(r"(?<![\w/.-])pricer ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?")


def anchors(page: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = FENCE.sub("", page.read_text())
    heads = re.findall(r"^#{1,6}\s+(.+?)\s*$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(FENCE.sub("", page.read_text()))
            if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto: are not checked here


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with that anchor in {file.relative_to(REPO)}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


QUOTED_PATH = re.compile(r"`((?:tests|pricer|sweeps|studies|deploy)/[\w/.-]+\.(?:py|yaml|sh))`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_quoted_repository_path_exists(page: Path) -> None:
    missing = [q for q in QUOTED_PATH.findall(page.read_text()) if not (REPO / q).exists()]
    assert not missing, f"{page.relative_to(REPO)} names files that are not in the tree: {missing}"


def _verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_pricer_verb_the_readme_names_exists() -> None:
    from sweeps.cli.main import build_parser

    readme = (REPO / "README.md").read_text()
    code = "\n".join(FENCE.findall(readme) + re.findall(r"`([^`\n]+)`", FENCE.sub("", readme)))
    named = set(VERB.findall(code))
    assert len(named) >= 10  # the commands table is there and was read
    verbs = _verbs(build_parser())
    missing = []
    for verb, sub in sorted(named):
        if verb not in verbs:
            missing.append(f"pricer {verb}")
            continue
        subs = _verbs(verbs[verb])
        if subs and sub and sub not in subs:
            missing.append(f"pricer {verb} {sub}")
    assert not missing, "the README names commands that don't exist: " + ", ".join(missing)
