"""Every Python example in README.md and docs/*.md runs as written.

The ```python blocks of one page run in order in one fresh namespace (later blocks may use
what earlier ones defined), in a temporary working folder, on the CPU, with one thread.
A page marks a block that cannot run here with an HTML comment on the line before it,
``<!-- doc-test: not run (reason) -->`` (a GPU, a cluster, a data folder the user has): the
reason is required, and such a block is listed, not silently passed over. A page whose
examples take more than a few seconds says ``<!-- doc-test: slow -->`` anywhere in it.
"""

from __future__ import annotations

import os
import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
BLOCK = re.compile(r"(?:^(<!--[^\n]*-->)\n)?^```python\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*doc-test:\s*not run\s*\((.+)\)\s*-->")


def blocks(page: Path) -> list[tuple[str, str | None]]:
    """(code, reason it is not run or None) for each python block of ``page``."""
    out = []
    for m in BLOCK.finditer(page.read_text()):
        marker, code = m.group(1), m.group(2)
        reason = None
        if marker and "doc-test" in marker:
            found = NOT_RUN.search(marker)
            assert found, f"{page.name}: malformed doc-test marker {marker!r}"
            reason = found.group(1)
        out.append((code, reason))
    return out


def _params():
    for page in PAGES:
        code = blocks(page)
        if not any(reason is None for _, reason in code):
            continue
        slow = "<!-- doc-test: slow -->" in page.read_text()
        marks = [pytest.mark.slow] if slow else []
        yield pytest.param(page, id=str(page.relative_to(ROOT)), marks=marks)


@pytest.mark.parametrize("page", list(_params()))
def test_examples_run_as_written(page, tmp_path, monkeypatch):
    import torch

    from efflab import experiments as registry

    # an example that registers an experiment must not leave it in this process's registry
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EFFLAB_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    # a real module, so that dataclasses and pickling defined in an example work
    module = types.ModuleType("efflab_doc_example")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    for i, (code, reason) in enumerate(blocks(page)):
        if reason is not None:
            continue
        try:
            exec(compile(code, f"{page.name}[block {i}]", "exec"), namespace)  # noqa: S102
        except Exception as e:  # noqa: BLE001 - report which block, then fail
            raise AssertionError(f"{page.name}, python block {i} fails: "
                                 f"{type(e).__name__}: {e}\n---\n{code}") from e


def test_every_not_run_block_says_why():
    for page in PAGES:
        for _code, reason in blocks(page):
            if reason is not None:
                assert len(reason.strip()) >= 8, f"{page.name}: give a real reason: {reason!r}"


def test_the_extractor_sees_blocks_and_markers(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("text\n```python\nx = 1\n```\n<!-- doc-test: not run (needs a GPU) -->\n"
                    "```python\ny = 2\n```\n")
    assert blocks(page) == [("x = 1\n", None), ("y = 2\n", "needs a GPU")]


os.environ.setdefault("OMP_NUM_THREADS", "1")
