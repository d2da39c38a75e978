import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from helpers import plotting  # noqa: E402
from tests.test_results import make_record  # noqa: E402


def test_learning_curves_overlay_runs_with_labels(tmp_path):
    fig = plotting.plot_learning_curves([make_record("baseline"), make_record("bn", epochs=2)])
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert ax.get_title() and ax.get_xlabel() == "epoch" and ax.get_ylabel()
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels == ["baseline train", "baseline valid", "bn train", "bn valid"]
    fig.savefig(tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    plt.close(fig)


def test_variant_keeps_its_colour_across_figures():
    a = plotting.plot_learning_curves([make_record("bn")])
    b = plotting.plot_learning_curves([make_record("baseline"), make_record("bn")])
    colour = a.axes[0].lines[0].get_color()
    assert colour == b.axes[0].lines[3].get_color() != b.axes[0].lines[0].get_color()
    plt.close("all")


def test_no_runs_is_an_error():
    with pytest.raises(ValueError):
        plotting.plot_learning_curves([])


def test_figures_are_saved_in_full_mode_only(tmp_path):
    import dataclasses

    from helpers import config

    fig = plotting.plot_learning_curves([make_record("baseline")])
    full = dataclasses.replace(config.FULL)
    quick = dataclasses.replace(config.QUICK)
    assert plotting.save_figure(fig, "x", quick) is None
    # results_dir is derived from the mode; point it at tmp_path for the test
    import unittest.mock as mock

    with mock.patch.object(type(full), "results_dir", property(lambda self: tmp_path)):
        path = plotting.save_figure(fig, "curves", full)
    assert path == tmp_path / "figures" / "curves.png" and path.stat().st_size > 10_000
    plt.close(fig)
