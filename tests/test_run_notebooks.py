import os

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from helpers import run_notebooks
from tests.backends import once  # noqa: E402

pytestmark = once  # no Keras backend involved: checked once


def write_notebook(path, *sources):
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def test_series_is_found_in_order_and_selectable():
    names = [p.name for p in run_notebooks.notebooks()]
    assert names == sorted(names) and names[:2] == ["01_deep_swish_network.ipynb", "02_nadam_early_stopping.ipynb"]
    assert [p.name for p in run_notebooks.notebooks(["02"])] == ["02_nadam_early_stopping.ipynb"]


def test_no_match_is_an_error(capsys):
    assert run_notebooks.main(["no-such-notebook"]) == 1
    assert "no notebook matches" in capsys.readouterr().err


def test_main_gives_the_mode_and_backend_to_the_kernel_not_to_this_process(tmp_path, monkeypatch):
    """Regression: main() once set CIFAR10_MODE=full in the caller, so the notebook tests
    that pytest ran afterwards trained in full mode and overwrote the committed records."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    write_notebook(folder / "01_env.ipynb",
                   "import os; print(os.environ['CIFAR10_MODE'], os.environ.get('KERAS_BACKEND'))")
    monkeypatch.setattr(run_notebooks, "NOTEBOOKS", folder)
    monkeypatch.setenv("CIFAR10_RESULTS", str(tmp_path / "results"))
    before = dict(os.environ)
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert run_notebooks.main(["--quick", "--backend", "tensorflow"]) == 0  # a copy in the quick results folder
    quick = nbformat.read(tmp_path / "results" / "quick" / "notebooks" / "01_env.ipynb", 4)
    assert quick.cells[0].outputs[0].text == "quick tensorflow\n"
    assert run_notebooks.main([]) == 0  # full mode: in place
    assert nbformat.read(folder / "01_env.ipynb", 4).cells[0].outputs[0].text == "full jax\n"
    assert dict(os.environ) == before and os.environ["CIFAR10_MODE"] == "quick"


def test_execute_writes_outputs_to_the_target_and_leaves_the_source_alone(tmp_path):
    src, out = write_notebook(tmp_path / "01_probe.ipynb", "x = 20 + 22", "print(x)"), tmp_path / "out.ipynb"
    cells = []
    seconds = run_notebooks.execute(src, out, lambda: cells.append(1))
    assert seconds > 0 and cells == [1, 1]
    assert nbformat.read(out, 4).cells[1].outputs[0].text == "42\n"
    assert nbformat.read(src, 4).cells[1].outputs == []


def test_saved_notebooks_keep_a_bar_at_its_last_state_and_the_metadata_jupyterlab_fills_in(tmp_path):
    src = write_notebook(tmp_path / "01_bar.ipynb", "import sys\nfor i in range(4):\n    sys.stdout.write(f'\\rbar {i}/3')\n"
                                                   "    sys.stdout.flush()\nprint()\nprint('done')")
    run_notebooks.execute(src, tmp_path / "out.ipynb")
    nb = nbformat.read(tmp_path / "out.ipynb", 4)
    assert [o.text for o in nb.cells[0].outputs] == ["bar 3/3\ndone\n"]
    assert nb.metadata.kernelspec == run_notebooks.KERNELSPEC
    assert nb.metadata.language_info["name"] == "python" and "version" in nb.metadata.language_info


def test_last_state_keeps_what_a_terminal_shows():
    assert run_notebooks.last_state("\rbar 1\rbar 2\n\r   \rnote\nend") == "bar 2\nnote\nend"
    cell = new_code_cell("")
    cell.outputs = [new_output("stream", name="stdout", text="a\r"), new_output("stream", name="stdout", text="b\n"),
                    new_output("stream", name="stderr", text="c\n")]
    run_notebooks.tidy_outputs(cell)
    assert [(o.name, o.text) for o in cell.outputs] == [("stdout", "b\n"), ("stderr", "c\n")]
