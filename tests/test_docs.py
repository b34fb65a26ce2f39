"""The documentation: the README stays a landing page whose links resolve, and the MkDocs site under
docs/ builds with `mkdocs build --strict` (no broken link or anchor, every page in the nav)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
MKDOCS_YML = REPO / "mkdocs.yml"

# The README's two commands, as a newcomer copies them: within its first screen.
COMMANDS = (
    "pip install -e . && ssran-edge predict",
    'pip install torch==2.13.0 && pip install -e ".[dev]" && python -m pytest -q',
)
README_MAX_LINES = 200
FIRST_SCREEN = 40

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`+[^`\n]*`+")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _links(markdown: str) -> list[str]:
    """Targets of inline Markdown links and images, code blocks and code spans left out."""
    text = INLINE_CODE.sub("", FENCE.sub("", markdown))
    return LINK.findall(text)


def _nav_pages(nav) -> list[str]:
    """Every page file named in mkdocs.yml's nav, however deep the sections nest."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def _mkdocs_config() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML (it comes with mkdocs) is not installed")
    # mkdocs.yml may hold tags such as !ENV or !!python/name: read them as plain values.
    loader = type("Loader", (yaml.SafeLoader,), {})
    loader.add_multi_constructor("", lambda loader, suffix, node: None)
    return yaml.load(MKDOCS_YML.read_text(), Loader=loader)


def test_mkdocs_build_strict(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs-material is not installed: pip install mkdocs-material")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(MKDOCS_YML),
                           "-d", str(site)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    assert (site / "index.html").is_file()


def test_readme_is_a_landing_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    first_screen = "\n".join(lines[:FIRST_SCREEN])
    for command in COMMANDS:
        assert command in first_screen, f"not in README.md's first {FIRST_SCREEN} lines: {command}"


def test_every_docs_page_is_in_the_nav():
    config = _mkdocs_config()
    docs_dir = REPO / config.get("docs_dir", "docs")
    assert docs_dir == DOCS
    nav = set(_nav_pages(config.get("nav")))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages, "no pages under docs/"
    assert not pages - nav, f"pages missing from mkdocs.yml's nav: {sorted(pages - nav)}"
    assert not nav - pages, f"nav entries with no page under docs/: {sorted(nav - pages)}"


@pytest.mark.parametrize("markdown", [README, *sorted(REPO.glob("*/README.md"))],
                         ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve(markdown):
    broken = []
    for target in _links(markdown.read_text()):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a URL (https:, mailto:) or an anchor on the same page
        path = unquote(target.split("#", 1)[0])
        resolved = (markdown.parent / path).resolve()
        if not resolved.exists():
            broken.append(target)
        elif REPO not in resolved.parents and resolved != REPO:
            broken.append(f"{target} (outside the repository)")
    assert not broken, f"{markdown.relative_to(REPO)}: links that do not resolve: {broken}"
