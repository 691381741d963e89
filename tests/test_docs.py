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
