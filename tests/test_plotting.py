import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers import plotting  # noqa: E402
from tests.test_results import make_record  # noqa: E402
from tests.backends import once  # noqa: E402

pytestmark = once  # no Keras backend involved: checked once


def test_learning_curves_overlay_runs_with_labels(tmp_path):
    fig = plotting.plot_learning_curves([make_record("baseline"), make_record("bn", epochs=2)])
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert ax.get_title() and ax.get_xlabel() == "epoch" and ax.get_ylabel()
    labels = [t.get_text() for t in fig.axes[-1].get_legend().get_texts()]  # one legend, outside the data
    assert labels == ["a-b: baseline, train", "a-b: baseline, valid", "c: batch norm, train", "c: batch norm, valid"]
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


def test_lr_finder_plot_marks_minimum_suggestion_and_chance_and_shows_the_whole_drop():
    from helpers.lr_finder import LRFinderResult

    rates = tuple(np.logspace(-6, 0, 50))
    losses = tuple(np.r_[2.3 - np.sin(np.linspace(0, 3, 45)), [5.0, 9.0, 20.0, 60.0, 200.0]])  # then it diverges
    result = LRFinderResult(rates, losses, losses, suggestion=1e-4, rule="rate at minimum smoothed loss / 10",
                            stopped="test", seconds=1.0)
    fig = plotting.plot_lr_finder(result)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and "learning rate" in ax.get_xlabel() and ax.get_title()
    labels = " ".join(t.get_text() for t in ax.get_legend().get_texts()).replace("\n", " ")
    assert "suggestion 0.0001 (rate at minimum smoothed loss / 10)" in labels and "minimum" in labels
    assert "sweep ended at 1" in labels and "chance level, ln 10 = 2.30" in labels
    assert f"smoothed loss: 2.300 down to {min(losses):.3f} nats" in labels
    lo, hi = ax.get_ylim()
    assert lo == 0 and np.log(10) < hi < 4  # from 0 to chance: a small drop looks small; the blow-up runs off the top
    legend = ax.get_legend().get_window_extent(fig.canvas.get_renderer())
    assert legend.x0 >= ax.get_window_extent(fig.canvas.get_renderer()).x1  # outside the data
    plt.close(fig)


def test_lr_finder_plot_of_a_fallback_says_what_happened():
    from helpers.lr_finder import LRFinderResult

    result = LRFinderResult((), (), (), suggestion=5e-4, rule="fallback: the sweep could not suggest a rate",
                            stopped="stopped at 1e-06: loss diverged", seconds=1.0)
    fig = plotting.plot_lr_finder(result)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["the sweep recorded no finite loss"]
    assert "fallback" in " ".join(t.get_text() for t in fig.axes[0].get_legend().get_texts())
    plt.close(fig)


def test_layer_stats_plot_shows_the_factor_per_layer_and_says_when_gradients_are_zero():
    from helpers.diagnostics import LayerStats

    ok = LayerStats((0.1, 0.0, 0.0), (1.0, 0.5, 0.25), (1e-3, 1e-3, 1e-3))
    dead = LayerStats((1e3, 1e9, 1e15), (1e3, 1e9, 1e15), (0.0, 0.0, 0.0))
    fig = plotting.plot_layer_stats({"He": ok, "N(0,1)": dead})
    factors = [line.get_ydata().tolist() for line in fig.axes[0].get_lines()[:2]]
    assert factors == [[0.5, 0.5], [1e6, 1e6]]  # std(layer) / std(previous layer)
    labels = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    assert labels == ["He", "N(0,1) (zeros not drawn)"]
    assert all(ax.get_xlabel() and ax.get_ylabel() and ax.get_title() for ax in fig.axes)
    plt.close(fig)


def test_activation_stats_plot_one_colour_per_network_one_style_per_stage():
    from helpers.diagnostics import LayerStats

    s0 = LayerStats((0.0, 0.1, 0.0), (1.0, 1.0, 1.0), (1e-3,) * 3)
    s1 = LayerStats((0.2, 0.3, 0.1), (1.5, 1.2, 1.1), (1e-3,) * 3)
    fig = plotting.plot_activation_stats({"SELU": {"at initialization": s0, "trained": s1},
                                          "Swish": {"at initialization": s0, "trained": s1}})
    mean_ax, std_ax = fig.axes
    lines = [l for l in std_ax.get_lines() if l.get_label() and not l.get_label().startswith("_")]
    assert [l.get_label() for l in lines] == ["SELU, at initialization", "SELU, trained",
                                              "Swish, at initialization", "Swish, trained"]
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert lines[0].get_linestyle() != lines[1].get_linestyle()
    assert std_ax.get_yscale() == "log" and all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    plt.close(fig)


def test_validation_curves_against_epochs_and_time():
    from tests.test_results import make_record

    runs = [make_record("bn", epochs=3), make_record("bn_seed1", epochs=4)]
    fig = plotting.plot_validation_curves({"bn": runs})
    by_epoch, by_time = fig.axes
    assert len(by_epoch.get_lines()) == len(by_time.get_lines()) == 1  # the mean of the seeds, one line
    # make_record's epochs take 0.5, 1.5 and 2.5 s: the time axis is their running sum, up to the
    # epoch every seed reached
    assert by_time.get_lines()[0].get_xdata().tolist() == [0.5, 2.0, 4.5]
    band = by_epoch.collections[0].get_paths()[0].vertices  # the seeds' range, filled
    assert band[:, 0].min() == 1 and band[:, 0].max() == 3
    assert "(s)" in by_time.get_xlabel()
    assert by_time.get_legend().get_texts()[0].get_text() == "c: batch norm: mean of 2 seeds"
    timed = plotting.plot_validation_curves({"bn": runs}, seconds_per_epoch={"bn": 2.0})
    assert timed.axes[1].get_lines()[0].get_xdata().tolist() == [2.0, 4.0, 6.0]
    plt.close("all")
