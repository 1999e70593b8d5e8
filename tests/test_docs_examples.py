"""The documentation's runnable examples run, offline, as written.

Convention: a fenced ```` ```python ```` block in ``docs/*.md`` is runnable when the line directly
above its opening fence is the HTML comment ``<!-- runnable -->`` (invisible in the rendered site).
Other python blocks (Hub downloads, GPU-only settings, fragments) are illustrations and are not run.

The runnable blocks of one page run in page order in one shared namespace, like the cells of a
notebook, so a later block may use names an earlier one defined. Each page runs in a fresh temporary
working directory, so relative paths such as ``"tiny-gpt2"`` land there. Examples must use tiny
models (``GPT2Config.tiny()``) and no network, so that each page takes seconds.
"""

import re
from pathlib import Path

import pytest
from huggingface_hub import constants as hf_constants

DOCS = Path(__file__).resolve().parents[1] / "docs"
MARKER = "<!-- runnable -->"
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\n]*)$")


def runnable_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number of the first code line, code)`` for each block marked runnable in ``text``."""
    lines = text.splitlines()
    for n, line in enumerate(lines):
        if line.strip() == MARKER and not (n + 1 < len(lines) and re.match(r"^[ \t]*`{3,}\s*python\b", lines[n + 1])):
            raise ValueError(f"line {n + 1}: {MARKER} must be directly followed by a ```python fence")
    blocks, i = [], 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        closing = re.compile(rf"^[ \t]*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        marked = i > 0 and lines[i - 1].strip() == MARKER
        start, i = i + 1, i + 1
        while i < len(lines) and not closing.match(lines[i]):
            i += 1
        if marked:
            code = "\n".join(line[indent:] for line in lines[start:i])
            blocks.append((start + 1, code))
        i += 1
    return blocks


def _pages() -> list[Path]:
    marked = lambda p: any(line.strip() == MARKER for line in p.read_text(encoding="utf-8").splitlines())
    return sorted(p for p in DOCS.glob("*.md") if marked(p))


def test_the_convention_finds_blocks():
    text = "\n".join(
        ["intro", MARKER, "```python", "x = 1", "```", "", "```python", "not run", "```"]
        + [MARKER, "```python", "y = x + 1", "```"]
    )
    assert runnable_blocks(text) == [(4, "x = 1"), (12, "y = x + 1")]
    for bad in (f"{MARKER}\n```bash\nls\n```", f"{MARKER}\n\n```python\nx = 1\n```"):
        with pytest.raises(ValueError, match="must be directly followed"):
            runnable_blocks(bad)
    if not DOCS.is_dir():
        pytest.skip(f"no docs folder at {DOCS}")
    assert _pages(), f"no page in {DOCS} has a block marked {MARKER}"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_page_examples_run(page: Path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # a snippet that reaches for the Hub by mistake fails fast instead of waiting on the network
    # (huggingface_hub reads the variable once, at import, so its constant is patched as well)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    blocks = runnable_blocks(page.read_text(encoding="utf-8"))
    assert blocks
    for line, code in blocks:
        # padded so that a traceback's line numbers are the page's own
        exec(compile("\n" * (line - 1) + code, str(page.relative_to(DOCS.parent)), "exec"), namespace)
