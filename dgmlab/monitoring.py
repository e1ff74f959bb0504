"""Condition monitoring of a photovoltaic string (thesis chapter 6; Maaløe et al., appendix D) on SIMULATED data.

The thesis compares three classifiers of the plant's condition from its sensors: multinomial logistic regression
(MLR), a 50-50 MLP with dropout and the SDGM with 50-50 networks, on the "simple" inputs (I, V) and the "complex" ones
(all six sensors), in three experiments:

* (i) fully supervised, 5-fold Monte Carlo cross-validation (80/20 splits): Table 6.2;
* (ii) semi-supervised, 100-1500 labels spread evenly over the ten classes (Fig. 6.3a);
* (iii) progressive: classes arrive one at a time in the order of Table 6.1 and the SDGM's unlabelled bound
  ``U(x)`` separates the conditions it has seen from those it has not (Fig. 6.3b), which makes it an anomaly score.

This module holds the protocol (one fold of one model, the progressive data, the anomaly scores and their ROC); the
chapter's notebooks and ``scripts/pv_experiments.py`` run it. The SDGM and the MLP train through
:func:`dgmlab.training.fit` with their ``pv`` recipes, the same code path as ``python -m dgmlab train sdgm --data pv``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from dgmlab.data import ALL_LABELS, DataBundle, balanced_subset, load_data, make_config
from dgmlab.models import get_model_class
from dgmlab.runtime import machine_description, seed_everything
from dgmlab.training import TrainConfig, fit

MODELS = ("mlr", "mlp", "sdgm")
INPUTS = ("simple", "complex")
BUDGETS = (100, 300, 500, 700, 900, 1100, 1300, 1500)
"""Label budgets of experiment (ii): 10 to 150 labelled minutes per class."""
PROGRESSIVE_STEPS = 6
"""Experiment (iii) stops after the sixth class of Table 6.1 (PS7, RS4, PS50, RS8, PSRS, PS75)."""
PROGRESSIVE_LABELS = 500
"""Labelled minutes of each newly added class in experiment (iii)."""

THESIS_TABLE_6_2 = {  # test accuracy in %, fully supervised (thesis Table 6.2)
    ("mlr", "simple"): 51.62, ("mlr", "complex"): 77.33,
    ("mlp", "simple"): 77.81, ("mlp", "complex"): 89.11,
    ("sdgm", "simple"): 79.06, ("sdgm", "complex"): 92.47,
}
THESIS_SDGM_1500_COMPLEX = 93.12
"""Thesis: the SDGM with 1500 labels on the complex inputs, above its fully supervised accuracy."""


@dataclass
class FoldResult:
    """One trained model on one fold: test accuracy (%), the row-normalised confusion matrix and the record."""

    model: str
    inputs: str
    labels: int | str
    seed: int
    accuracy: float
    confusion: list[list[float]]
    steps: int
    time_s: float
    machine: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Row-normalised confusion matrix: row = true class, column = predicted class, rows sum to 1."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    counts = np.zeros((n_classes, n_classes))
    np.add.at(counts, (y_true, y_pred), 1.0)
    return counts / np.maximum(counts.sum(1, keepdims=True), 1.0)


def epochs_for_steps(model_name: str, data: DataBundle, steps: int, batch_size: int) -> int:
    """Epochs that give about ``steps`` optimiser steps. An SDGM epoch is a pass over all training minutes; an MLP
    sees only the labelled ones, so with 100 labels its epoch is a single step."""
    n = len(data.x_train) if model_name == "sdgm" else data.n_labelled or len(data.x_train)
    return max(1, math.ceil(steps / max(n // batch_size, 1)))


def recipe_steps(model_name: str) -> int:
    """The optimiser steps of the ``pv`` recipe (its epochs over the full 12 000 training minutes)."""
    _, train = get_model_class(model_name).recipe("pv")
    return train["epochs"] * (12000 // train.get("batch_size", TrainConfig.batch_size))


def train_model(model_name: str, data: DataBundle, seed: int = 0, steps: int | None = None,
                overrides: dict | None = None):
    """Train the ``pv`` recipe of ``mlp`` or ``sdgm`` on ``data`` for about ``steps`` optimiser steps (default: the
    recipe's). The MLP trains on the labelled minutes only. Returns the model in eval mode and its history."""
    if model_name not in ("mlp", "sdgm"):
        raise ValueError(f"train_model trains 'mlp' or 'sdgm', got {model_name!r} (MLR: fit_mlr)")
    cls = get_model_class(model_name)
    model_opts, train_opts = cls.recipe("pv")
    train_opts.setdefault("batch_size", TrainConfig.batch_size)
    if cls.setting == "supervised":
        data = data.labelled_only()
    elif data.x_labelled is None:
        raise ValueError("the SDGM needs labelled minutes: load the data with labels=N or labels='all'")
    steps = recipe_steps(model_name) if steps is None else steps
    if steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps}")
    train_opts["epochs"] = epochs_for_steps(model_name, data, steps, train_opts["batch_size"])
    if model_name == "sdgm":  # warm-up is specified in epochs of the full data; keep it a fixed share of training
        full = get_model_class("sdgm").recipe("pv")
        share = full[0].get("warmup_epochs", 0) / full[1]["epochs"]
        model_opts = {**model_opts, "warmup_epochs": int(round(share * train_opts["epochs"]))}
    seed_everything(seed)
    model = cls(make_config(cls.Config, data, **{**model_opts, **(overrides or {})}))
    cfg = TrainConfig(seed=seed, progress=False, eval_every=train_opts["epochs"], **train_opts)
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # fit prints one line per epoch; hundreds here
        history = fit(model, data, cfg)
    n = len(data.x_train)
    model.steps_done = len(history) * max(n // train_opts["batch_size"], 1)  # whole epochs: at least ``steps``
    return model.eval(), history


def fit_mlr(data: DataBundle, c: float = 1.0, seed: int = 0):
    """Multinomial logistic regression with an L2 penalty (strength ``1/c``) on the labelled minutes."""
    from sklearn.linear_model import LogisticRegression

    d = data.labelled_only()
    return LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(d.x_train.numpy(), d.y_train.numpy())


PREDICT_SAMPLES = 20
"""Draws of the SDGM's auxiliary ``a`` averaged by its prediction rule ``argmax_y E_q(a|x)[q(y|a, x)]``."""


@torch.no_grad()
def predict(model, x: torch.Tensor) -> np.ndarray:
    """Predicted classes of a fitted MLR (scikit-learn) or a dgmlab classifier (the SDGM averages
    :data:`PREDICT_SAMPLES` draws of ``a``)."""
    if hasattr(model, "predict_proba"):
        return model.predict(x.numpy())
    model.eval()
    if getattr(model, "setting", "") == "semi-supervised":
        return model.predict(x, samples=PREDICT_SAMPLES).cpu().numpy()
    return model.predict(x).cpu().numpy()


def run_fold(model_name: str, inputs: str = "complex", labels: int | str = ALL_LABELS, seed: int = 0,
             steps: int | None = None, data: DataBundle | None = None) -> FoldResult:
    """Train and test one model on one Monte Carlo fold (``seed`` draws the 80/20 split and the labels).

    ``labels``: ``"all"`` (experiment i) or a budget divisible by 10 (experiment ii). MLR and MLP see only the
    labelled minutes; the SDGM also sees every training minute unlabelled.
    """
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; choose one of {MODELS}")
    data = data if data is not None else load_data("pv", labels=labels, seed=seed, inputs=inputs)
    start = time.perf_counter()
    if model_name == "mlr":
        model, used = fit_mlr(data, seed=seed), 0
    else:
        model, history = train_model(model_name, data, seed=seed, steps=steps)
        used = model.steps_done
    y_pred = predict(model, data.x_test)
    y_true = data.y_test.numpy()
    return FoldResult(model_name, inputs, labels, seed, float(100.0 * (y_pred == y_true).mean()),
                      confusion_matrix(y_true, y_pred, data.n_classes).round(4).tolist(), used,
                      round(time.perf_counter() - start, 2), machine_description(torch.device("cpu")))


def summarise(results: list[dict], key: str = "accuracy") -> dict:
    """Mean, sample standard deviation and count of ``key`` over a list of fold results."""
    v = np.array([r[key] for r in results], float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}


# ------------------------------------------------------------------------------------ experiment (iii)
def progressive_data(step: int, inputs: str = "complex", seed: int = 0,
                     new_labels: int = PROGRESSIVE_LABELS) -> tuple[DataBundle, list[int]]:
    """Training data after ``step`` classes of Table 6.1 have arrived (0 <= step <= 10).

    Always one labelled minute of every class (the operator's first examples); every arrived class brings all its
    training minutes, ``new_labels`` of them labelled. The test set stays whole. Returns the data and the indices
    of the arrived classes.
    """
    full = load_data("pv", labels=None, seed=seed, inputs=inputs)
    k = full.n_classes
    if not isinstance(step, int) or not 0 <= step <= k:
        raise ValueError(f"step must be an integer between 0 and {k}, got {step!r}")
    y = full.y_train
    first = balanced_subset(y, k, k, seed)  # one labelled minute per class
    seen = list(range(step))
    gen = torch.Generator().manual_seed(seed + 1)
    lab = [first]
    for c in seen:
        idx = torch.nonzero(y == c).flatten()
        idx = idx[~torch.isin(idx, first)]
        lab.append(idx[torch.randperm(len(idx), generator=gen)[:new_labels]])
    lab = torch.cat(lab).unique()
    pool = torch.cat([torch.nonzero(y == c).flatten() for c in seen] + [first]).unique()
    data = DataBundle("pv", full.x_train[pool], y[pool], full.x_test, full.y_test, n_classes=k,
                      likelihood="gaussian", class_names=full.class_names, feature_names=full.feature_names,
                      x_labelled=full.x_train[lab], y_labelled=y[lab])
    return data, seen


@torch.no_grad()
def elbo_scores(model, x: torch.Tensor, samples: int = 10, batch_size: int = 1000) -> np.ndarray:
    """The SDGM's unlabelled bound ``U(x)`` per minute (nats; y summed out), averaged over ``samples`` draws.
    A minute whose bound is far below the training minutes' does not look like anything the model has seen."""
    model.eval()
    out = [model.unlabelled_bound(xb, samples=samples).value for xb in x.split(batch_size)]
    return torch.cat(out).cpu().numpy()


def roc_curve(score_normal: np.ndarray, score_anomalous: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """ROC of the rule "flag when the score is strictly below a threshold": false-alarm rate on normal minutes and hit
    rate on anomalous ones at every threshold, and the area under the curve (the probability that a random
    anomalous minute scores lower than a random normal one; ties count half)."""
    normal, anomalous = np.asarray(score_normal, float), np.asarray(score_anomalous, float)
    if not len(normal) or not len(anomalous):
        raise ValueError("roc_curve needs at least one normal and one anomalous score")
    # Every distinct score as a threshold, plus +inf: "flag when below" (strictly, as threshold_rates) then runs
    # from flagging nothing (at the smallest score) to flagging everything.
    thresholds = np.concatenate([np.unique(np.concatenate([normal, anomalous])), [np.inf]])
    far = np.searchsorted(np.sort(normal), thresholds, side="left") / len(normal)
    hit = np.searchsorted(np.sort(anomalous), thresholds, side="left") / len(anomalous)
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([anomalous, normal]))[:len(anomalous)]  # average ranks: ties count half
    auc = 1.0 - (ranks.sum() - len(anomalous) * (len(anomalous) + 1) / 2) / (len(anomalous) * len(normal))
    return far, hit, float(auc)


def threshold_rates(score_normal: np.ndarray, score_anomalous: np.ndarray, threshold: float) -> dict:
    """False alarms (normal minutes flagged) and misses (anomalous minutes not flagged) of "flag when the score is
    below ``threshold``", as fractions and counts."""
    normal, anomalous = np.asarray(score_normal, float), np.asarray(score_anomalous, float)
    fa, miss = int((normal < threshold).sum()), int((anomalous >= threshold).sum())
    return {"threshold": float(threshold), "false_alarms": fa, "false_alarm_rate": fa / max(len(normal), 1),
            "misses": miss, "miss_rate": miss / max(len(anomalous), 1)}
