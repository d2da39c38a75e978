"""Figures: learning curves of one or many runs, the LR finder, signal propagation, MC dropout, 1cycle.

Compute apart from plotting: every function here takes results (Run records, finder
results) and draws them; none trains anything. Each figure has a title, axis labels
with units and a legend, and the same colour for the same variant in every notebook.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from helpers import config
from helpers.results import name_of, variant_of

# One colour per variant in every figure, hues kept apart (matplotlib's qualitative tab10/tab20)
_TAB = plt.get_cmap("tab20").colors
VARIANT_COLORS = {
    "baseline": _TAB[0],           # blue
    "input_bn": _TAB[18],          # cyan
    "bn_hidden": _TAB[16],         # olive
    "bn": _TAB[2],                 # orange
    "bn_128": _TAB[12],            # pink
    "selu": _TAB[4],               # green
    "alpha_dropout": _TAB[8],      # purple
    "mc_dropout": _TAB[9],         # light purple
    "onecycle": _TAB[6],           # red
    "onecycle_30": _TAB[10],       # brown
    "onecycle_30_flip": _TAB[14],  # grey
}
OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.02, 1), "borderaxespad": 0, "fontsize": "small"}
STYLES = ["--", "-", ":", "-."]


def _finish(fig, legend_ax, title=None, counted=()):
    """The legend outside ``legend_ax``, ``title`` over the figure, whole-number ticks on the ``counted`` x axes."""
    for ax in counted:  # epochs, layers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    legend_ax.legend(**OUTSIDE)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def use_style():
    """The seaborn style all notebooks share."""
    sns.set_theme(style="whitegrid", context="notebook")


def color_of(variant: str, i: int = 0):
    """A variant's fixed colour (seed suffixes ignored); other names get palette colours by position."""
    return VARIANT_COLORS.get(variant_of(variant), sns.color_palette("dark", 10)[i % 10])


def plot_learning_curves(records, title=None):
    """Training (dashed) and validation (solid) loss and accuracy of one ``RunRecord`` or several, overlaid."""
    records = [records] if hasattr(records, "history") else list(records)
    if not records:
        raise ValueError("no runs to plot")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), squeeze=False)
    for ax, metric in zip(axes[0], ("loss", "accuracy")):
        for i, r in enumerate(records):
            epochs = range(1, r.epochs + 1)
            c = color_of(r.variant, i)
            ax.plot(epochs, r.history[metric], "--", color=c, alpha=0.7, label=f"{name_of(r.variant)}, train")
            ax.plot(epochs, r.history[f"val_{metric}"], "-", color=c, label=f"{name_of(r.variant)}, valid")
            ax.plot(r.best_epoch, r.history[f"val_{metric}"][r.best_epoch - 1], "o", color=c)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric} (cross-entropy, nats)" if metric == "loss" else f"{metric} (fraction)")
        ax.set_title(f"{metric}: train (dashed), validation (solid); dot: best epoch", fontsize="medium")
    return _finish(fig, axes[0][-1], title, counted=axes[0])


def plot_lr_finder(result):
    """Smoothed loss against learning rate (log scale), the suggestion marked with its rule.

    The loss axis runs from 0 to a little above chance level (ln 10) or the sweep's first loss:
    a drop of a few hundredths of a nat looks as small as it is, not like a valley.
    """
    fig, ax = plt.subplots(figsize=(9, 4))
    chance = float(np.log(10))
    ax.axhline(chance, color="0.45", lw=0.8, ls="-.", label=f"chance level, ln 10 = {chance:.2f}")
    if len(result.smoothed) >= 2:
        ax.plot(result.rates, result.losses, color="0.75", lw=0.8, label="batch loss")
        best = int(np.argmin(result.smoothed))
        ax.plot(result.rates, result.smoothed, color="C0", label=f"smoothed loss: {result.smoothed[0]:.3f} down to "
                                                                  f"{result.smoothed[best]:.3f} nats")
        ax.plot(result.rates[best], result.smoothed[best], "o", color="C0",
                label=f"smoothed minimum at {result.rates[best]:.2g}")
        ax.axvline(result.rates[-1], color="0.3", ls=":", label=f"sweep ended at {result.rates[-1]:.2g}")
        ax.set_ylim(0, 1.15 * max(result.smoothed[0], chance))
    else:
        ax.text(0.5, 0.5, "the sweep recorded no finite loss", transform=ax.transAxes, ha="center")
    ax.axvline(result.suggestion, color="C3", ls="--", label=f"suggestion {result.suggestion:.2g}\n({result.rule})")
    ax.set(xscale="log", xlabel="learning rate (log scale)", ylabel="training loss (cross-entropy, nats)",
           title=f"LR finder: {len(result.rates)} steps, {result.stopped}")
    return _finish(fig, ax)


def plot_layer_stats(stats_by_name, title="Signal through the layers at initialization"):
    """Per layer of each ``{label: LayerStats}``: the change of the activations' spread, their std, the gradient.

    A constant factor per layer is a flat line whose height can be read; 1: the signal is kept.
    """
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for i, (label, s) in enumerate(stats_by_name.items()):
        std = np.asarray(s.act_std, dtype=np.float64)
        depth = np.arange(1, len(std) + 1)
        axes[0].plot(depth[1:], std[1:] / std[:-1], "o-", ms=3, color=f"C{i}", label=label)
        axes[1].plot(depth, std, "o-", ms=3, color=f"C{i}", label=label)
        grads = np.asarray(s.grad_norm, dtype=np.float64)
        axes[2].plot(depth, np.where(grads > 0, grads, np.nan), "o-", ms=3, color=f"C{i}",
                     label=label if (grads > 0).all() else f"{label} (zeros not drawn)")
    axes[0].axhline(1.0, color="0.3", lw=0.8, ls=":")
    for ax, ylabel, subtitle in zip(axes, ("std(layer) / std(previous layer), log scale",
                                           "std of activations (log scale)",
                                           "gradient norm of kernel (log scale)"),
                                    ("change of the spread per layer (1 = kept)", "spread of the activations",
                                     "gradient reaching each layer's kernel")):
        ax.set(xlabel="hidden layer (1 = nearest the input)", ylabel=ylabel, title=subtitle, yscale="log")
    return _finish(fig, axes[2], title, counted=axes)


def plot_activation_stats(stats, title="Activations of every hidden layer, validation images"):
    """Mean and std of each hidden layer's activations against depth, for several networks and stages.

    ``stats``: ``{network: {stage: LayerStats}}``, one colour per network, one line style per stage.
    """
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    for i, (network, stages) in enumerate(stats.items()):
        for j, (stage, s) in enumerate(stages.items()):
            depth = range(1, len(s.act_std) + 1)
            for ax, values in zip(axes, (s.act_mean, s.act_std)):
                ax.plot(depth, values, STYLES[j % len(STYLES)], marker="o", ms=3, color=f"C{i}",
                        label=f"{network}, {stage}")
    for ax, ylabel, ref in zip(axes, ("mean of the activations", "std of the activations (log scale)"), (0.0, 1.0)):
        ax.axhline(ref, color="0.3", lw=0.8, ls=":")
        ax.set(xlabel="hidden layer (1 = nearest the input)", ylabel=ylabel)
    axes[0].set_title("mean (self-normalizing aims at 0)")
    axes[1].set_title("standard deviation (self-normalizing aims at 1)")
    axes[1].set_yscale("log")
    return _finish(fig, axes[1], title, counted=axes)


def plot_validation_curves(groups, title="Validation curves", seconds_per_epoch=None):
    """Validation accuracy of each group of seeds against epochs and seconds: the mean a line, the range a band.

    Args:
        groups: ``{variant: [RunRecord, ...]}``, drawn up to the epoch every seed reached.
        seconds_per_epoch: ``{variant: seconds}``, each network timed alone (``training.time_alone``):
            the time axis is then epochs x these; else each record's own epoch times.
    """
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), sharey=True)
    for i, (variant, records) in enumerate(groups.items()):
        records = list(records)
        n = min(r.epochs for r in records)
        values = np.array([r.history["val_accuracy"][:n] for r in records], dtype=np.float64)
        epochs = np.arange(1, n + 1)
        seconds = (epochs * seconds_per_epoch[variant] if seconds_per_epoch
                   else np.mean([np.cumsum(r.history["epoch_seconds"][:n]) for r in records], axis=0))
        c = color_of(variant, i)
        for ax, x in zip(axes, (epochs, seconds)):
            ax.plot(x, values.mean(axis=0), "-", color=c, lw=1.6,
                    label=f"{name_of(variant)}: mean of {len(records)} seeds")
            ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=c, alpha=0.2, lw=0)
    axes[0].set_xlabel("epoch")
    axes[1].set_xlabel("epochs x seconds per epoch, each network timed alone (s)" if seconds_per_epoch
                       else "wall-clock time from the start of training (s)")
    axes[0].set_ylabel("validation accuracy (fraction)")
    axes[0].set_title("against epochs (line: mean; band: seeds' range, to the shortest run's end)", fontsize="medium")
    axes[1].set_title("against time", fontsize="medium")
    return _finish(fig, axes[1], title, counted=axes[:1])


def plot_training_curves(records, title="Training and validation, every epoch"):
    """Training loss, validation loss and validation accuracy of each run, three panels side by side.

    A network whose training loss falls while its validation loss climbs is learning: what fails is elsewhere.
    """
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for i, r in enumerate(records):
        c = sns.color_palette("colorblind", 10)[i % 10]
        epochs = range(1, r.epochs + 1)
        for ax, key in zip(axes, ("loss", "val_loss", "val_accuracy")):
            ax.plot(epochs, r.history[key], "-", color=c, label=r.variant)
    for ax, (name, unit) in zip(axes, (("training loss", "nats"), ("validation loss", "nats"),
                                      ("validation accuracy", "fraction"))):
        ax.set(xlabel="epoch", ylabel=f"{name} ({unit})", title=name)
    return _finish(fig, axes[2], title, counted=axes)


def plot_weight_sums(sums, title="Each hidden layer's weights, per unit: the sum and the sum of squares"):
    """Per layer of each ``{label: WeightSums}``: the mean over units of the incoming weights' sum and sum of squares.

    Self-normalization is derived for 0 and 1 (dotted lines).
    """
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    for i, (label, w) in enumerate(sums.items()):
        depth = np.arange(1, len(w.sum_mean) + 1)
        for ax, mean, spread in zip(axes, (w.sum_mean, w.square_mean), (w.sum_std, w.square_std)):
            ax.errorbar(depth, mean, yerr=spread, fmt=STYLES[i % len(STYLES)], marker="o", ms=3, capsize=2,
                        color=f"C{i}", label=label)
    for ax, ref, subtitle in zip(axes, (0.0, 1.0), ("a unit's incoming weights: sum (derived for 0)",
                                                     "their sum of squares (derived for 1)")):
        ax.axhline(ref, color="0.3", lw=0.8, ls=":")
        ax.set(xlabel="hidden layer (1 = nearest the input)", ylabel="mean over units (bar: std over units)",
               title=subtitle)
    return _finish(fig, axes[1], title, counted=axes)


def plot_mc_accuracy(curves, title="MC dropout: accuracy against the number of passes"):
    """Accuracy of the mean of the first k passes against k (log axis), beside the deterministic model.

    ``curves``: ``{set name: (ks, accuracies, lows, highs, deterministic (acc, low, high))}``, a panel per set.
    """
    fig, axes = plt.subplots(1, len(curves), figsize=(6.2 * len(curves), 4), squeeze=False)
    for ax, (name, (ks, acc, low, high, det)) in zip(axes[0], curves.items()):
        c_mc, c_det = color_of("mc_dropout"), color_of("alpha_dropout")
        ax.plot(ks, acc, "o-", color=c_mc, ms=3, label="MC dropout, mean of k passes")
        ax.fill_between(ks, low, high, color=c_mc, alpha=0.2, label="95% interval (MC)")
        ax.axhline(det[0], color=c_det, lw=1.5, label="deterministic (dropout off)")
        ax.axhspan(det[1], det[2], color=c_det, alpha=0.12, label="95% interval (deterministic)")
        ax.set(xscale="log", xlabel="MC passes averaged, k (log scale)", ylabel="accuracy (fraction)", title=name)
    return _finish(fig, axes[0][-1], title)


def plot_uncertainty(scores, title="Uncertainty of right and wrong predictions (test set)"):
    """Histograms of an uncertainty score for right and wrong predictions, one panel per method.

    ``scores``: ``{panel title: (score per image, correct per image, x-axis label)}``.
    """
    fig, axes = plt.subplots(1, len(scores), figsize=(6.2 * len(scores), 3.8), squeeze=False)
    for ax, (name, (score, correct, xlabel)) in zip(axes[0], scores.items()):
        bins = np.linspace(np.min(score), np.max(score), 40)
        ax.hist(score[correct], bins=bins, alpha=0.6, density=True, label="right", color=sns.color_palette("colorblind")[2])
        ax.hist(score[~correct], bins=bins, alpha=0.6, density=True, label="wrong", color=sns.color_palette("colorblind")[3])
        ax.set(xlabel=xlabel, ylabel="density", title=name)
    return _finish(fig, axes[0][-1], title)


def plot_reliability(diagrams, title="Reliability diagram (test set)"):
    """Accuracy against confidence per bin, one line per method, the diagonal for perfect calibration.

    ``diagrams``: ``{label: (*helpers.metrics.reliability_bins(...), expected calibration error)}``.
    """
    fig, ax = plt.subplots(figsize=(5.6, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    for i, (label, (conf, acc, count, ece)) in enumerate(diagrams.items()):
        keep = count > 0
        ax.plot(conf[keep], acc[keep], "o-", ms=4, color=sns.color_palette("colorblind")[i],
                label=f"{label} (ECE {ece:.3f})")
    ax.set(xlabel="confidence: top predicted probability (bin mean)", ylabel="accuracy in the bin (fraction)",
           xlim=(0, 1), ylim=(0, 1), title=title)
    return _finish(fig, ax)


def plot_one_cycle(schedule, steps_per_epoch=None, title="1cycle: learning rate and momentum per iteration"):
    """The rate and the momentum of a ``helpers.schedules.OneCycle`` against the iteration."""
    steps = np.arange(schedule.total_steps + 1)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    c_rate, c_mom = sns.color_palette("colorblind")[0], sns.color_palette("colorblind")[1]
    ax.plot(steps, schedule.rate_at(steps), color=c_rate, label="learning rate")
    ax.set_xlabel("iteration (train step)" + (f"; {steps_per_epoch} per epoch" if steps_per_epoch else ""))
    ax.set_ylabel("learning rate", color=c_rate)
    twin = ax.twinx()
    twin.plot(steps, schedule.momentum_at(steps), color=c_mom, ls="--", label="momentum (Nadam's beta_1)")
    twin.set_ylabel("momentum (beta_1)", color=c_mom)
    twin.grid(False)
    lines = ax.get_lines() + twin.get_lines()
    twin.legend(lines, [l.get_label() for l in lines], **{**OUTSIDE, "bbox_to_anchor": (1.1, 1)})
    ax.set_title(title)
    fig.tight_layout()
    return fig


def save_figure(fig, name: str, settings=None):
    """Save a figure for the README as ``results/figures/<name>.png`` and return the path; None in quick mode."""
    settings = settings or config.SETTINGS
    if settings.mode != "full":
        return None
    path = settings.results_dir / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return path
