import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from helpers import run_notebooks
from tests.backends import once  # noqa: E402

pytestmark = once  # no Keras backend involved: checked once


def test_series_is_found_in_order_and_selectable():
    names = [p.name for p in run_notebooks.notebooks()]
    assert names == sorted(names) and names[:2] == ["01_deep_swish_network.ipynb", "02_nadam_early_stopping.ipynb"]
    assert [p.name for p in run_notebooks.notebooks(["02"])] == ["02_nadam_early_stopping.ipynb"]


def test_no_match_is_an_error(capsys):
    assert run_notebooks.main(["no-such-notebook"]) == 1
    assert "no notebook matches" in capsys.readouterr().err


def test_mode_goes_to_the_kernel_not_to_this_process(tmp_path):
    """Regression: main() once set CIFAR10_MODE=full in the caller, so the notebook tests
    that pytest ran afterwards trained in full mode and overwrote the committed records."""
    import os

    nb = new_notebook(cells=[new_code_cell("import os; print(os.environ['CIFAR10_MODE'])")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "01_mode.ipynb")
    before = dict(os.environ)
    run_notebooks.execute(tmp_path / "01_mode.ipynb", tmp_path / "out.ipynb", env={**os.environ, "CIFAR10_MODE": "full"})
    assert nbformat.read(tmp_path / "out.ipynb", 4).cells[0].outputs[0].text == "full\n"
    run_notebooks.main(["no-such-notebook"])
    assert dict(os.environ) == before and os.environ["CIFAR10_MODE"] == "quick"


def test_execute_writes_outputs_to_the_target_and_leaves_the_source_alone(tmp_path):
    nb = new_notebook(cells=[new_code_cell("x = 20 + 22"), new_code_cell("print(x)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src, out = tmp_path / "01_probe.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, src)
    updates = []

    class Bar:
        @staticmethod
        def update(k):
            updates.append(k)

    seconds = run_notebooks.execute(src, out, Bar)
    assert seconds > 0 and updates == [1, 1]
    assert nbformat.read(out, 4).cells[1].outputs[0].text == "42\n"
    assert nbformat.read(src, 4).cells[1].outputs == []
