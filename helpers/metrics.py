"""Accuracy through one helper that checks shapes; recipes compared across seeds; calibration, error detection.

``np.equal(y_test, y_pred).mean()`` with ``y_test`` of shape (N, 1) and ``y_pred`` of
shape (N,) broadcasts to an (N, N) matrix and reports about 0.1 even for perfect
predictions. This helper refuses shapes that would broadcast.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from helpers import results
from helpers.data import normalize_labels


def accuracy(y_true, y_pred) -> float:
    """Fraction of correct predictions, never an (N, N) broadcast.

    ``y_true``: class ids (N,), or (N, 1) as ``keras.datasets.cifar10.load_data()`` gives them;
    ``y_pred``: class ids (N,), or class scores (N, n_classes), the highest wins ((N, 1) is refused).
    """
    y_true = normalize_labels(y_true, "y_true", n_classes=None)
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2 and y_pred.shape[1] == 1:
        raise ValueError(f"y_pred has shape {y_pred.shape}: give class ids as (N,) and probabilities as "
                         "(N, n_classes); (N, 1) would be argmaxed to all zeros")
    if y_pred.ndim == 2:
        if not np.isfinite(y_pred).all():
            raise ValueError("y_pred holds NaN or infinite scores: the network diverged, or the inputs are wrong")
        y_pred = y_pred.argmax(axis=1)
    y_pred = normalize_labels(y_pred, "y_pred", n_classes=None, count=len(y_true))
    if len(y_true) == 0:
        raise ValueError("accuracy of zero samples is undefined")
    return float(np.mean(y_true == y_pred))


def accuracy_interval(y_true, y_pred, confidence: float = 0.95) -> tuple[float, float, float]:
    """Accuracy and its 95% Wilson interval over the N images (not the training seed): (accuracy, low, high)."""
    acc = accuracy(y_true, y_pred)
    return (acc, *wilson_interval(acc, len(np.asarray(y_true)), confidence))


def wilson_interval(accuracy_value: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """(low, high): the Wilson interval of an accuracy measured on ``n`` images (``scipy.stats.binomtest``).

    How much the accuracy would move on another ``n`` images, nothing of how much it moves from seed to seed.
    """
    if n < 1 or not 0 <= accuracy_value <= 1:
        raise ValueError(f"need n >= 1 and an accuracy in [0, 1], got n={n}, accuracy={accuracy_value}")
    k = round(accuracy_value * n)
    interval = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def mcnemar(right_a, right_b) -> tuple[int, int, float]:
    """Two trained networks on the same images, compared image by image: McNemar's exact test.

    Returns ``(only_a, only_b, p_value)``: the images right for A alone, for B alone, and the
    chance of so uneven a split if each went either way with probability 1/2. Two networks, not
    two recipes: two seeds of one recipe already differ here. Recipes: ``compare_seeds``.
    """
    right_a, right_b = flags(right_a, "right_a"), flags(right_b, "right_b")
    if right_a.shape != right_b.shape or right_a.ndim != 1:
        raise ValueError(f"need two (N,) arrays of right/wrong for the same images, got {right_a.shape} "
                         f"and {right_b.shape}")
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))
    if only_a + only_b == 0:
        return only_a, only_b, 1.0
    return only_a, only_b, float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def flags(values, name: str = "flags") -> np.ndarray:
    """Yes/no flags (right or wrong, error or not) as booleans; class ids or scores are refused, not cast."""
    values = np.asarray(values)
    if values.dtype != bool and not (values.dtype.kind in "iu" and np.isin(values, (0, 1)).all()):
        raise ValueError(f"{name} must be yes/no flags (booleans, or 0 and 1), got {values.dtype} with values "
                         f"{np.unique(values)[:5].tolist()}: compare predictions with the labels first (predicted == y)")
    return values.astype(bool)


@dataclass(frozen=True)
class SeedComparison:
    """Recipe A against recipe B, each trained with several seeds: Welch's t over the seeds' accuracies.

    ``low``, ``high``, ``p_value``, ``detectable``: NaN when no seed of either recipe differs from the others.
    """

    difference: float  # the mean of A's seeds - the mean of B's
    low: float  # confidence interval of the difference
    high: float
    p_value: float
    detectable: float  # the smallest true difference these seeds find 80% of the time (two-sided, 5%)


def compare_seeds(a, b, confidence: float = 0.95) -> SeedComparison:
    """Is recipe A better than recipe B? Compare their seeds' accuracies with Welch's t (``scipy.stats``).

    ``a``, ``b``: one number per seed (e.g. validation accuracies), at least 2 each. The question is
    about training's randomness, so the seeds, not the test images, are the samples; Welch's t does
    not assume the two recipes vary alike. A difference below ``detectable`` going unseen is no
    evidence that there is none.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or len(a) < 2 or len(b) < 2:
        raise ValueError(f"need at least 2 seeds per recipe, as 1-D arrays; got shapes {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("the seeds' values must be finite numbers")
    test = stats.ttest_ind(a, b, equal_var=False)
    interval = test.confidence_interval(confidence)
    se = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    detectable = (stats.t.ppf(1 - (1 - confidence) / 2, test.df) + stats.t.ppf(0.8, test.df)) * se
    if se == 0:  # every seed of both recipes scored the same: no spread to measure a difference against
        return SeedComparison(float(a.mean() - b.mean()), math.nan, math.nan, math.nan, math.nan)
    return SeedComparison(difference=float(a.mean() - b.mean()), low=float(interval.low), high=float(interval.high),
                          p_value=float(test.pvalue), detectable=float(detectable))


def reliability_bins(y_true, probabilities, n_bins: int = 15):
    """Confidence (the top probability) binned into ``n_bins`` equal-width bins on (0, 1].

    Returns (mean confidence, accuracy, count) per bin, NaN where a bin is empty: the
    points of a reliability diagram. A calibrated model has accuracy = confidence. Refuses
    scores that are not probabilities (logits, percentages): calibration measured on them means nothing.
    """
    y_true, p = normalize_labels(y_true, "y_true", n_classes=None), np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != len(y_true) or p.shape[1] < 2:
        raise ValueError(f"probabilities must have shape (N, n_classes) with N={len(y_true)}, got {p.shape}")
    if len(y_true) == 0:
        raise ValueError("calibration of zero samples is undefined")
    if y_true.max() >= p.shape[1]:
        raise ValueError(f"y_true has class {y_true.max()}, but the probabilities have {p.shape[1]} classes")
    if not (np.isfinite(p).all() and p.min() >= 0 and p.max() <= 1 and np.allclose(p.sum(axis=1), 1, atol=1e-3)):
        raise ValueError("probabilities must be in [0, 1] with rows summing to 1 (a softmax output); got values from "
                         f"{np.nanmin(p):.3g} to {np.nanmax(p):.3g}, row sums up to {np.nanmax(p.sum(axis=1)):.3g}: "
                         "apply keras.ops.softmax to scores or logits first")
    confidence, correct = p.max(axis=1), (p.argmax(axis=1) == y_true)
    which = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore"):
        conf = np.bincount(which, weights=confidence, minlength=n_bins) / count
        acc = np.bincount(which, weights=correct, minlength=n_bins) / count
    return conf, acc, count


def expected_calibration_error(y_true, probabilities, n_bins: int = 15) -> float:
    """ECE: the gap |accuracy - confidence| of each bin, weighted by its share of the samples.

    Ours: neither scipy nor scikit-learn has it (``calibration_curve`` is for binary classifiers).
    """
    conf, acc, count = reliability_bins(y_true, probabilities, n_bins)
    filled = count > 0
    return float(np.sum(count[filled] * np.abs(acc[filled] - conf[filled])) / np.sum(count))


def roc_auc(scores, positives) -> float:
    """Area under the ROC curve (``sklearn.metrics.roc_auc_score``): the chance that a random positive
    scores above a random negative (with errors as positives: 0.5 chance, 1.0 every error ranked first).
    """
    from sklearn.metrics import roc_auc_score

    scores, positives = np.asarray(scores, dtype=np.float64), flags(positives, "positives")
    if scores.ndim != 1 or positives.shape != scores.shape:
        raise ValueError(f"scores and positives must be 1-D of one length, got {scores.shape} and {positives.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or infinite values: no ranking of errors can be read from them")
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"the ROC area needs positives and negatives, got {n_pos} and {n_neg}")
    return float(roc_auc_score(positives, scores))


def time_to_reach(record, val_loss: float):
    """(epoch, seconds) at the end of the first epoch whose validation loss is at most ``val_loss``.

    Seconds are wall time from the start of training, the compiling first epoch included, as
    ``wall_time_to_best``. ``(None, None)`` if the run never got there.
    """
    if not math.isfinite(val_loss):
        raise ValueError(f"val_loss must be a finite target, got {val_loss}")
    epoch = next((i for i, loss in enumerate(record.history["val_loss"], 1) if loss <= val_loss), None)
    return (epoch, sum(record.history["epoch_seconds"][:epoch])) if epoch else (None, None)


def _mean_sd(mean: float, sd: float) -> str:
    """An accuracy over seeds as the tables show it: the mean in percent, ± the standard deviation in points."""
    return f"{100 * mean:.2f}% ± {100 * sd:.2f}"


def compare(groups: dict, reference: str | None = None, seconds_per_epoch: dict | None = None,
            key: str = "valid_accuracy") -> pd.DataFrame:
    """Final models over their seeds, as a table a reader can scan: one row per variant.

    Args:
        groups: ``{variant: [RunRecord, ...]}``, named as ``VARIANT_NAMES`` says.
        reference: the variant the others are measured against (``compare_seeds``: the difference
            of the mean ``key`` in points, its 95% interval, its p-value, what these seeds detect).
        seconds_per_epoch: ``{variant: seconds}``, each network timed alone (``training.time_alone``).
    """
    name = {"valid_accuracy": "valid acc", "test_accuracy": "test acc"}.get(key, key)
    rows = []
    ref = groups.get(reference)
    for variant, records in groups.items():
        values, test = (np.array([getattr(r, k) for r in records]) for k in (key, "test_accuracy"))
        best = float(np.mean([r.best_epoch for r in records]))
        row = {"model": results.name_of(variant), "seeds": len(records), "learning rate": f"{records[0].learning_rate:.2e}",
               "best epoch": f"{best:.1f}",
               f"{name} (mean ± SD)": _mean_sd(values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0),
               "test acc": f"{100 * test.mean():.2f}%"}
        if ref is not None:
            label = "vs " + results.name_of(reference).split(": ")[-1]
            if variant == reference or len(records) < 2 or len(ref) < 2:
                row[label], row["p"], row["detectable"] = "", "", ""
            else:
                c = compare_seeds(values, [getattr(r, key) for r in ref])
                row[label] = f"{100 * c.difference:+.2f} [{100 * c.low:+.2f}, {100 * c.high:+.2f}]"
                row["p"], row["detectable"] = f"{c.p_value:.2g}", f"{100 * c.detectable:.2f}"
        if seconds_per_epoch:
            row["s/epoch"] = f"{seconds_per_epoch[variant]:.2f} s"
            row["s to best"] = f"{best * seconds_per_epoch[variant]:.0f} s"
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")


def summary_line(records, key: str = "valid_accuracy") -> str:
    """'validation accuracy over 3 runs: mean 50.12%, range 49.96% to 50.62% (0.66 points)'."""
    name = {"valid_accuracy": "validation accuracy", "test_accuracy": "test accuracy"}.get(key, key)
    values = [100 * getattr(r, key) for r in records]
    if not values:
        return f"{name}: no run finished"
    lo, hi = min(values), max(values)
    return (f"{name} over {len(values)} runs: mean {np.mean(values):.2f}%, range {lo:.2f}% to {hi:.2f}% "
            f"({hi - lo:.2f} points)")


def series_table(series: dict, seconds_per_epoch: dict) -> pd.DataFrame:
    """Every final model of the series in numbers, one row per variant (``VARIANT_NAMES``).

    ``seconds_to_best``: the mean best epoch times the seconds per epoch (``training.time_alone``);
    accuracies: mean and standard deviation over the seeds, the spread a recipe's next run will show.
    """
    rows = []
    for variant, records in series.items():
        best = float(np.mean([r.best_epoch for r in records]))
        rows.append({"model": results.name_of(variant), "variant": variant, "seeds": len(records),
                     "learning_rate": records[0].learning_rate, "best_epoch": best,
                     "seconds_per_epoch": seconds_per_epoch[variant], "seconds_to_best": best * seconds_per_epoch[variant],
                     **_over_seeds({k: [getattr(r, f"{k}_accuracy") for r in records] for k in ("valid", "test")}),
                     "parameters": records[0].config.get("architecture", {}).get("parameters")})
    return pd.DataFrame(rows).set_index("model")


def _over_seeds(accuracies: dict) -> dict:
    """``{"valid": [...], ...}`` -> ``{"valid_mean": ..., "valid_std": ...}`` (the std over seeds, ddof 1)."""
    return {f"{k}_{stat}": float(np.mean(v) if stat == "mean" else np.std(v, ddof=1) if len(v) > 1 else 0.0)
            for k, v in accuracies.items() for stat in ("mean", "std")}


def add_mc_dropout(table: pd.DataFrame, mc: dict) -> pd.DataFrame:
    """``table`` with a row for MC dropout after alpha dropout's: the same training, MC's accuracies.

    ``mc``: notebook 05's ``mc_dropout.json`` (per seed, the accuracy of the MC mean).
    """
    per_seed = pd.DataFrame(mc["per_seed"]).pivot(index="record", columns="set", values="MC")
    row = table.loc[results.name_of("alpha_dropout")].copy()
    row["variant"] = "mc_dropout"
    for key, value in _over_seeds({k: per_seed[k].to_numpy() for k in ("valid", "test")}).items():
        row[key] = value
    order = list(table.index)
    order.insert(order.index(results.name_of("alpha_dropout")) + 1, results.name_of("mc_dropout"))
    return pd.concat([table, row.to_frame(results.name_of("mc_dropout")).T]).loc[order]


def series_display(table: pd.DataFrame) -> pd.DataFrame:
    """``series_table`` as text a reader scans: rates, seconds with units, percentages, thousands separated."""
    return pd.DataFrame({
        "learning rate": table.learning_rate.map("{:.2e}".format),
        "epochs to best": table.best_epoch.map("{:.1f}".format),
        "s/epoch": table.seconds_per_epoch.map("{:.2f} s".format),
        "to best": table.seconds_to_best.map("{:.0f} s".format),
        **{f"{key} acc (mean ± SD)": [_mean_sd(m, sd) for m, sd in zip(table[f"{key}_mean"], table[f"{key}_std"])]
           for key in ("valid", "test")},
        "parameters": table.parameters.map("{:,}".format),
    }, index=table.index.rename("model"))
