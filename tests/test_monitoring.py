"""The chapter-6 protocol (dgmlab.monitoring) on the SIMULATED PV plant: metrics, the progressive data of
experiment (iii), one fold of each model, and the CLI's --labels all / --inputs. About half a minute on one core."""

import dataclasses
import json
from itertools import product

import numpy as np
import pytest
import torch

from dgmlab import monitoring as mon
from dgmlab.checkpoints import load_checkpoint
from dgmlab.cli import main as cli_main
from dgmlab.data import load_data, make_config
from dgmlab.pv_figures import confused_pairs, pairwise_overlap


@pytest.fixture(scope="module")
def pv_full():
    """All simulated minutes, no labels (the 80/20 split of seed 0)."""
    return load_data("pv", labels=None, seed=0, inputs="complex")


@pytest.fixture(scope="module")
def pv_small():
    """A small labelled bundle for quick training: 500 training and 600 test minutes, all labelled."""
    d = load_data("pv", labels="all", seed=0, inputs="complex")
    return dataclasses.replace(d, x_train=d.x_train[:500], y_train=d.y_train[:500], x_test=d.x_test[:600],
                               y_test=d.y_test[:600], x_labelled=d.x_train[:500], y_labelled=d.y_train[:500])


# ------------------------------------------------------------------------------------------- metrics
def test_confusion_matrix_matches_a_hand_count():
    y_true = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 0, 2, 2, 0, 2])
    c = mon.confusion_matrix(y_true, y_pred, 4)
    expected = np.array([[1 / 2, 1 / 2, 0, 0], [1 / 3, 2 / 3, 0, 0], [1 / 4, 0, 3 / 4, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(c, expected)
    np.testing.assert_allclose(c[:3].sum(1), 1.0)   # rows of classes that occur sum to 1
    assert c[3].sum() == 0                          # a class without test points has an empty row


def test_confusion_matrix_rows_sum_to_one_on_random_labels():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 10, 1000), rng.integers(0, 10, 1000)
    c = mon.confusion_matrix(y_true, y_pred, 10)
    np.testing.assert_allclose(c.sum(1), 1.0)
    assert np.trace(c) == pytest.approx(sum((y_pred[y_true == k] == k).mean() for k in range(10)))


def _brute_force_auc(normal, anomalous):
    """P(a random anomalous score < a random normal score), ties counting half."""
    wins = sum((a < n) + 0.5 * (a == n) for a, n in product(anomalous, normal))
    return wins / (len(anomalous) * len(normal))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_equals_the_pairwise_probability_with_ties(seed):
    rng = np.random.default_rng(seed)
    normal = rng.integers(-5, 6, 40).astype(float)          # integer scores: many ties
    anomalous = rng.integers(-8, 4, 30).astype(float)
    far, hit, auc = mon.roc_curve(normal, anomalous)
    assert auc == pytest.approx(_brute_force_auc(normal, anomalous), abs=1e-12)
    assert far[0] == hit[0] == 0.0 and far[-1] == hit[-1] == 1.0
    assert np.all(np.diff(far) >= 0) and np.all(np.diff(hit) >= 0)
    assert np.trapezoid(hit, far) == pytest.approx(auc, abs=1e-12)   # the area under the drawn curve


def test_roc_obvious_cases():
    assert mon.roc_curve([5.0, 6.0, 7.0], [1.0, 2.0])[2] == 1.0    # every anomaly scores lower
    assert mon.roc_curve([1.0, 2.0], [5.0, 6.0, 7.0])[2] == 0.0    # every anomaly scores higher
    same = np.arange(10.0)
    assert mon.roc_curve(same, same)[2] == pytest.approx(0.5)      # indistinguishable
    with pytest.raises(ValueError, match="at least one"):
        mon.roc_curve([], [1.0])


def test_threshold_rates_counts():
    normal, anomalous = [-1.0, 0.0, 2.0, 3.0], [-5.0, -3.0, 0.0, 4.0, -2.0]
    r = mon.threshold_rates(normal, anomalous, threshold=0.0)   # flag when the score is below 0
    assert r["false_alarms"] == 1 and r["false_alarm_rate"] == pytest.approx(1 / 4)
    assert r["misses"] == 2 and r["miss_rate"] == pytest.approx(2 / 5)
    assert r["threshold"] == 0.0


def test_summarise():
    s = mon.summarise([{"accuracy": 90.0}, {"accuracy": 92.0}, {"accuracy": 94.0}])
    assert s == {"mean": pytest.approx(92.0), "std": pytest.approx(2.0), "n": 3}
    assert mon.summarise([{"accuracy": 80.0}])["std"] == 0.0


# ------------------------------------------------------------------------------- experiment (iii) data
def test_progressive_step_zero_has_one_label_per_class(pv_full):
    data, seen = mon.progressive_data(0, seed=0)
    assert seen == []
    assert data.n_labelled == 10 and sorted(data.y_labelled.tolist()) == list(range(10))
    assert len(data.x_train) == 10                       # nothing has arrived yet but the ten first examples
    assert len(data.x_test) == len(pv_full.x_test)       # the test set stays whole


@pytest.mark.parametrize("step", [1, 3])
def test_progressive_step_k_holds_the_first_k_classes(pv_full, step):
    data, seen = mon.progressive_data(step, seed=0)
    assert seen == list(range(step))
    y, yl = data.y_train, data.y_labelled
    full_counts = torch.bincount(pv_full.y_train, minlength=10)
    counts = torch.bincount(y, minlength=10)
    for c in range(10):
        if c < step:   # an arrived class brings all its training minutes, 500 newly labelled + its first example
            assert counts[c] == full_counts[c]
            assert (yl == c).sum() == mon.PROGRESSIVE_LABELS + 1
        else:          # the others only their single labelled minute
            assert counts[c] == 1 and (yl == c).sum() == 1
    assert data.n_labelled == 10 + step * mon.PROGRESSIVE_LABELS
    # the labelled minutes are training minutes
    rows = {tuple(r) for r in data.x_train.numpy().round(5)}
    assert all(tuple(r) in rows for r in data.x_labelled.numpy().round(5))


@pytest.mark.parametrize("step", [-1, 11, 2.5, "3"])
def test_progressive_bad_step_is_a_clear_error(step):
    with pytest.raises(ValueError, match="step must be an integer between 0 and 10"):
        mon.progressive_data(step)


# ----------------------------------------------------------------------------------------- one fold
@pytest.mark.parametrize("model", ["mlr", "mlp", "sdgm"])
def test_run_fold_returns_sane_results(pv_small, model):
    r = mon.run_fold(model, "complex", "all", seed=0, steps=5, data=pv_small)
    assert 0.0 <= r.accuracy <= 100.0
    c = np.array(r.confusion)
    assert c.shape == (10, 10)
    present = np.bincount(pv_small.y_test.numpy(), minlength=10) > 0
    np.testing.assert_allclose(c[present].sum(1), 1.0, atol=1e-3)
    diag = np.diag(c)[present] @ np.bincount(pv_small.y_test.numpy(), minlength=10)[present]
    assert 100 * diag / len(pv_small.y_test) == pytest.approx(r.accuracy, abs=0.1)
    d = r.to_dict()
    assert d["model"] == model and d["inputs"] == "complex" and d["labels"] == "all" and d["machine"]
    json.dumps(d)   # what the experiment script writes


def test_train_model_on_simple_inputs_predicts_every_test_minute():
    data = load_data("pv", labels="all", seed=1, inputs="simple")
    data = dataclasses.replace(data, x_train=data.x_train[:300], y_train=data.y_train[:300],
                               x_labelled=data.x_train[:300], y_labelled=data.y_train[:300])
    model, history = mon.train_model("sdgm", data, seed=1, steps=3)
    assert model.config.x_dim == 2 and not model.training
    pred = mon.predict(model, data.x_test[:200])
    assert pred.shape == (200,) and set(pred.tolist()) <= set(range(10))
    scores = mon.elbo_scores(model, data.x_test[:50], samples=2)
    assert scores.shape == (50,) and np.all(np.isfinite(scores))


def test_bad_model_name_or_labels_are_clear_errors(pv_small):
    with pytest.raises(ValueError, match="unknown model 'svm'"):
        mon.run_fold("svm", data=pv_small)
    with pytest.raises(ValueError, match="train_model trains 'mlp' or 'sdgm'"):
        mon.train_model("mlr", pv_small)
    with pytest.raises(ValueError, match="SDGM needs labelled minutes"):
        mon.train_model("sdgm", dataclasses.replace(pv_small, x_labelled=None, y_labelled=None))
    with pytest.raises(ValueError, match="labels must be a positive integer or 'all'"):
        mon.run_fold("mlr", labels="many")
    with pytest.raises(ValueError, match="cannot be spread evenly over 10 classes"):
        mon.run_fold("mlr", labels=15)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        mon.train_model("mlp", pv_small, steps=0)


def test_inputs_option_is_checked():
    with pytest.raises(ValueError, match="inputs= selects the sensors of the pv dataset"):
        load_data("mnist", inputs="complex")   # raised before any MNIST file is read
    with pytest.raises(ValueError, match="inputs must be one of"):
        load_data("pv", inputs="medium")


# --------------------------------------------------------------------------------------------- CLI
def test_cli_trains_on_all_labels_and_complex_inputs(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli_main(["train", "sdgm", "--data", "pv", "--labels", "all", "--inputs", "complex", "--epochs", "1",
                   "--max-batches", "2", "--seed", "3", "--device", "cpu", "--out", str(out), "--no-progress"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"] == "pv" and metrics["labels"] == "all" and "--inputs complex" in metrics["command"]
    assert metrics["config"]["x_dim"] == 6 and metrics["config"]["n_labelled"] == metrics["config"]["n_train"]
    state = load_checkpoint(out / "model.pt")
    assert state["data"]["inputs"] == "complex" and state["data"]["labels"] == "all"


def test_cli_rejects_inputs_for_other_data(tmp_path):
    with pytest.raises(SystemExit, match="--inputs selects the sensors of --data pv"):
        cli_main(["train", "mlp", "--data", "mnist", "--inputs", "simple", "--epochs", "1", "--max-batches", "1",
                  "--out", str(tmp_path / "x"), "--no-progress"])


# --------------------------------------------------------------------------- helpers of the chapter pages
def test_pairwise_overlap_and_confused_pairs():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0]])   # classes 0 and 1 identical, 2 far away
    y = np.repeat(np.arange(3), 200)
    x = centres[y] + rng.normal(size=(600, 2))
    o = pairwise_overlap(x[::2], y[::2], x[1::2], y[1::2], 3)
    assert o[0, 1] == o[1, 0] and 0.3 < o[0, 1] < 0.7          # indistinguishable
    assert o[0, 2] == 0.0 and o[1, 2] == 0.0 and np.all(np.diag(o) == 0)
    pairs = confused_pairs(np.array([[0.8, 0.2, 0.0], [0.3, 0.7, 0.0], [0.0, 0.05, 0.95]]), ["a", "b", "c"], top=2)
    assert pairs[0][:2] == ("a", "b") and pairs[0][2] == pytest.approx(0.5)
    assert pairs[1][:2] == ("b", "c")


def test_shipped_pv_checkpoint_matches_its_record():
    """The SDGM of the supervised page (thesis Fig. 6.2): loads weights-only, was made by the documented command,
    and reproduces the test error its run recorded."""
    from dgmlab import pretrained
    from dgmlab.models import get_model_class

    state = torch.load(pretrained.path("sdgm-pv-complex"), map_location="cpu", weights_only=True)
    assert state["model"] == "sdgm" and state["data"]["inputs"] == "complex" and state["data"]["labels"] == "all"
    meta = pretrained.metrics("sdgm-pv-complex")
    assert meta["command"].startswith("python -m dgmlab train sdgm --data pv --labels all --inputs complex --seed 0")
    cls = get_model_class("sdgm")
    options, training = cls.recipe("pv")
    assert meta["epochs_done"] == training["epochs"]
    data = load_data("pv", labels="all", seed=meta["seed"], inputs="complex")
    resolved = dataclasses.asdict(make_config(cls.Config, data, **options))  # e.g. bn_labelled="auto" -> "batch"
    for key in options:   # trained with today's recipe
        value = resolved[key]
        assert meta["config"][key] == (list(value) if isinstance(value, tuple) else value), key
    model = pretrained.load_pretrained("sdgm-pv-complex", expect="sdgm")
    torch.manual_seed(0)
    accuracy = 100 * (mon.predict(model, data.x_test) == data.y_test.numpy()).mean()
    assert accuracy == pytest.approx(100 - meta["final"]["test_error"], abs=1.0)
