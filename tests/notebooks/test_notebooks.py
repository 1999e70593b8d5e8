"""Every notebook in ``notebooks/`` is stored with the outputs of a real run and runs again, top to
bottom, offline on a CPU within its time limit, with its training loops shortened (the docs site
renders the stored outputs)."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebooks need the test extra (nbformat, nbclient, ipykernel)")
nbclient = pytest.importorskip("nbclient", reason="the notebooks need the test extra (nbclient)")
pytest.importorskip("ipykernel", reason="the notebooks need the test extra (ipykernel)")

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300


def test_there_are_notebooks():
    assert {
        "01_gpt2.ipynb",
        "02_gemma.ipynb",
        "03_t5.ipynb",
        "04_t5_vae.ipynb",
        "05_llama.ipynb",
        "06_training_at_scale.ipynb",
    } <= {p.name for p in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_with_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code"
    unrun = [i for i, c in enumerate(code) if c.get("execution_count") is None]
    assert not unrun, f"{path.name}: code cells {unrun} were stored without being run"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} was stored with an error output: {errors[0].get('ename')}"


# The test runs every cell of every notebook, with each training loop cut to four steps and its
# warmup to one (the stored outputs are those of the full run). A loop's length changes no code path
# (the step is compiled and run, the metrics gathered, plotted and printed all the same), and no cell
# asserts on what the training reached; each substitution must match exactly once, so a notebook
# edited out from under it fails here instead of silently running in full.
SHORTER_LOOPS = {
    "01_gpt2": [
        ("steps, batch_size, seq_len = 300, 16, 64", "steps, batch_size, seq_len = 4, 16, 64"),
        ("warmup_steps=20, total_steps=steps", "warmup_steps=1, total_steps=steps"),
    ],
    "03_t5": [
        ("steps: int = 400", "steps: int = 4"),
        ("warmup_steps=20, total_steps=steps", "warmup_steps=1, total_steps=steps"),
    ],
    "04_t5_vae": [
        ("steps, batch_size = 600, 32", "steps, batch_size = 4, 32"),
        ("warmup_steps=30, total_steps=steps", "warmup_steps=1, total_steps=steps"),
    ],
    "05_llama": [
        ("    steps = 200\n", "    steps = 4\n"),
        ("warmup_steps=20, total_steps=steps", "warmup_steps=1, total_steps=steps"),
    ],
}


def _shorten_loops(nb, name: str) -> None:
    for old, new in SHORTER_LOOPS.get(name, []):
        cells = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        count = sum(c.source.count(old) for c in cells)
        assert count == 1, f"{name}: expected {old!r} once in the notebook's code, found it {count} times"
        cells[0].source = cells[0].source.replace(old, new)


def test_shortened_loops_match_the_notebooks():
    for name in SHORTER_LOOPS:
        _shorten_loops(nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4), name)


def _run(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    _shorten_loops(nb, path.stem)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell and its traceback
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert outputs, f"{path.name} ran but printed nothing"


def _notebook_test(path: Path):
    @pytest.mark.slow
    def test_runs_top_to_bottom(self):
        _run(path)

    return test_runs_top_to_bottom


# One class per notebook: under `--dist loadscope` each class is its own unit of work, so the
# notebooks (a minute or two each) spread over the xdist workers instead of queueing on one.
for _path in NOTEBOOKS:
    _name = "TestRuns_" + _path.stem
    globals()[_name] = type(_name, (), {"test_runs_top_to_bottom": _notebook_test(_path)})
