"""Figures: learning curves of one or many runs, the LR finder, signal propagation.

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

VARIANT_COLORS = dict(zip(
    ("baseline", "bn", "selu", "alpha_dropout", "mc_dropout", "onecycle"),
    sns.color_palette("colorblind", 6)))


def use_style():
    """The seaborn style all notebooks share."""
    sns.set_theme(style="whitegrid", context="notebook")


def color_of(variant: str, i: int = 0):
    """A variant's fixed colour; other names get palette colours by position."""
    return VARIANT_COLORS.get(variant, sns.color_palette("dark", 10)[i % 10])


def plot_learning_curves(records, metrics=("loss", "accuracy"), title=None, mark_best=True):
    """Training (dashed) and validation (solid) curves of each run, one panel per metric.

    Args:
        records: one ``RunRecord`` or a list of them, overlaid.
        metrics: history keys without the ``val_`` prefix.
    Returns:
        The matplotlib ``Figure``. Used in: notebooks 02-06.
    """
    records = [records] if hasattr(records, "history") else list(records)
    if not records:
        raise ValueError("no runs to plot")
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for i, r in enumerate(records):
            epochs = range(1, r.epochs + 1)
            c = color_of(r.variant, i)
            ax.plot(epochs, r.history[metric], "--", color=c, alpha=0.7, label=f"{r.variant} train")
            ax.plot(epochs, r.history[f"val_{metric}"], "-", color=c, label=f"{r.variant} valid")
            if mark_best:
                ax.plot(r.best_epoch, r.history[f"val_{metric}"][r.best_epoch - 1], "o", color=c)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{metric} (cross-entropy, nats)" if metric == "loss" else f"{metric} (fraction)")
        ax.set_title(f"{metric}: train (dashed) vs validation (solid); dot = best epoch")
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_lr_finder(result, ax=None):
    """Smoothed loss against learning rate (log scale), the suggestion marked with its rule.

    Used in: notebooks 02-06.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    ax.plot(result.rates, result.losses, color="0.75", lw=0.8, label="batch loss")
    ax.plot(result.rates, result.smoothed, color="C0", label="smoothed loss")
    best = int(np.argmin(result.smoothed))
    ax.plot(result.rates[best], result.smoothed[best], "o", color="C0",
            label=f"smoothed minimum at {result.rates[best]:.2g}")
    ax.axvline(result.suggestion, color="C3", ls="--",
               label=f"suggestion {result.suggestion:.2g} ({result.rule})")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss (cross-entropy, nats)")
    # zoom on the useful part: from the minimum to a little above the starting loss
    lo, start = min(result.smoothed), result.smoothed[0]
    hi = start + max(start - lo, 0.05 * start)
    ax.set_ylim(lo - 0.25 * (hi - lo), hi)
    ax.set_title(f"LR finder: {len(result.rates)} steps, {result.stopped}")
    ax.legend(fontsize="small")
    return ax.figure


def plot_layer_stats(stats_by_name, title="Signal through the layers at initialization"):
    """Per-layer activation std and gradient norm against depth, one line per network.

    Args:
        stats_by_name: ``{label: LayerStats}`` from ``helpers.diagnostics.layer_stats``.
    Used in: notebook 01.
    """
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    for i, (label, s) in enumerate(stats_by_name.items()):
        depth = range(1, len(s.act_std) + 1)
        axes[0].plot(depth, s.act_mean, "o-", ms=3, color=f"C{i}", label=label)
        axes[1].plot(depth, s.act_std, "o-", ms=3, color=f"C{i}", label=label)
        zero = not any(g > 0 for g in s.grad_norm)
        axes[2].plot(depth, s.grad_norm, "o-", ms=3, color=f"C{i}",
                     label=f"{label}: exactly 0, not drawn" if zero else label)
    for ax, ylabel, subtitle in zip(axes, ("mean activation (symmetric log scale)",
                                           "std of activations (log scale)",
                                           "gradient norm of kernel (log scale)"),
                                    ("mean of the activations", "spread of the activations",
                                     "gradient reaching each layer's kernel")):
        ax.set_xlabel("hidden layer (1 = nearest the input)")
        ax.set_ylabel(ylabel)
        ax.set_title(subtitle)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_yscale("symlog", linthresh=1e-3)
    lo, hi = axes[0].get_ylim()
    axes[0].set_yticks([t for t in (-1e12, -1e6, -1, -1e-2, 0, 1e-2, 1, 1e6, 1e12, 1e18) if lo <= t <= hi])
    axes[1].set_yscale("log")
    axes[2].set_yscale("log")
    for ax in axes:
        ax.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_figure(fig, name: str, settings=None):
    """Save a figure for the README as ``results/figures/<name>.png``, in full mode only.

    Returns the path, or None in quick mode (quick figures are never committed).
    """
    settings = settings or config.SETTINGS
    if settings.mode != "full":
        return None
    path = settings.results_dir / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    return path
