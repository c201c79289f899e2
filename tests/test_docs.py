"""The documentation points at things that exist: relative links, file paths named in docs and docstrings, and the
README's layout section against the tree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"```.*?```", re.S)
PATH = re.compile(
    r"(?<![\w/.<-])((?:benchmarks|experiments|docs|conf|scripts|notebooks|tests|kernels|src)/[\w/.-]*?"
    r"\.(?:py|md|yaml|ipynb|jsonl|sh))\b"
)
OPTIONAL = {"conf/local/default.yaml"}  # gitignored: one machine's settings, named as optional


def documents() -> list[Path]:
    return [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "experiments").rglob("README.md")),
    ]


def broken_links(path: Path) -> list[str]:
    text = CODE_BLOCK.sub("", path.read_text())
    targets = [m.group(1) for m in LINK.finditer(text)]
    local = [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    return [t for t in local if not (path.parent / t.split("#")[0]).exists()]


def test_every_relative_link_points_to_a_file():
    broken = {str(p.relative_to(ROOT)): b for p in documents() if (b := broken_links(p))}
    assert not broken


def test_the_link_check_finds_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [gone](nowhere.md) [web](https://example.org) ```[in code](x.md)```")
    assert broken_links(page) == ["nowhere.md"]


def test_files_named_in_docs_and_docstrings_exist():
    sources = [*documents(), *sorted((ROOT / "src" / "metalab").rglob("*.py"))]
    missing = {
        (str(p.relative_to(ROOT)), name)
        for p in sources
        for name in PATH.findall(p.read_text())
        if "<" not in name and name not in OPTIONAL and not (ROOT / name).exists()
    }
    assert not missing


def test_the_readme_layout_names_every_part_of_the_tree():
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout") :]
    layout = layout[: layout.index("\n## ", 1)]
    tops = [
        p.name
        for p in ROOT.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and p.name not in {"logs", "outputs", "multirun", "data", "wandb", "__pycache__"}
        and not p.name.endswith(".egg-info")
    ]
    package = [
        p.name for p in (ROOT / "src" / "metalab").iterdir() if p.name != "__pycache__" and p.name != "__init__.py"
    ]
    unnamed = [
        n for n in [*tops, *package] if not re.search(rf"(?<![\w.]){re.escape(n.removesuffix('.py'))}\b", layout)
    ]
    assert not unnamed
