"""Every ```python snippet in docs/ runs: the learning path stays true.

Snippets of one page run in order in one namespace (a page is a small lesson). A fence preceded
by the line `<!-- skip-test -->` is not run (for snippets that need downloads or minutes).
"""

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"(<!-- skip-test -->\s*\n)?```python\n(.*?)```", re.S)


def snippets(page: Path) -> list[str]:
    return [code for skip, code in FENCE.findall(page.read_text(encoding="utf-8")) if not skip]


PAGES = sorted(p for p in DOCS.glob("*.md") if snippets(p)) + [DOCS.parent / "README.md"]


def test_docs_have_runnable_pages():
    assert len(PAGES) >= 7


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_snippets_run(page, capsys):
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for i, code in enumerate(snippets(page)):
        try:
            exec(compile(code, f"{page.name}[snippet {i}]", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{page.name}, snippet {i} failed: {exc!r}\n{code}") from exc


PICTURE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def test_every_picture_a_page_shows_is_kept_in_the_repository():
    """A page's `![...](file)` must name a file that exists and that git does not ignore.

    `.gitignore` ignores PNGs outside `docs/images/`: a picture written beside its page shows
    on the machine that drew it and is missing from every clone (it happened to pages 21 and 22)."""
    import shutil
    import subprocess

    repo = DOCS.parent
    missing, ignored = [], []
    for page in sorted(DOCS.glob("*.md")) + [repo / "README.md"]:
        for target in PICTURE.findall(page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            path = (page.parent / target).resolve()
            if not path.is_file():
                missing.append(f"{page.name}: {target}")
                continue
            if shutil.which("git") is None:      # without git only existence is checked
                continue
            check = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=repo, capture_output=True)
            if check.returncode == 0:            # 0: ignored; 1: not ignored; 128: not a git checkout
                ignored.append(f"{page.name}: {target}")
    assert not missing, f"pictures that do not exist: {missing}"
    assert not ignored, f"pictures git ignores (put them in docs/images/): {ignored}"
