import nbformat
import pytest

from whisper_cpu.bench import publish


@pytest.mark.parametrize("notebook", publish.notebooks(), ids=lambda p: p.name)
def test_notebook_runs_against_the_committed_results(notebook, tmp_path):
    executed = nbformat.read(publish.execute_notebook(notebook, tmp_path / notebook.name), as_version=4)
    outputs = [o for cell in executed.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_there_are_notebooks():
    assert {p.name for p in publish.notebooks()} >= {"01_timings.ipynb", "02_accuracy.ipynb"}
