import json
import subprocess
import sys

import pytest

from dgmlab.cli import main


def test_help_lists_models_and_datasets():
    out = subprocess.run([sys.executable, "-m", "dgmlab", "--help"], capture_output=True, text=True, check=True)
    assert "models:" in out.stdout and "mlp" in out.stdout
    assert "halfmoons" in out.stdout and "mnist" in out.stdout


def test_tiny_train_writes_valid_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "mlp", "--data", "halfmoons", "--epochs", "2", "--seed", "3", "--out", str(out),
               "--no-progress", "--device", "cpu"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ["model", "data", "command", "seed", "device", "wall_clock_s", "history", "final", "machine"]:
        assert key in metrics
    assert metrics["model"] == "mlp" and metrics["data"] == "halfmoons" and metrics["seed"] == 3
    assert metrics["command"].startswith("python -m dgmlab train mlp")
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert {"epoch", "train_loss", "test_error"} <= set(metrics["final"])
    assert (out / "model.pt").exists()
    # a second run into the same folder must not silently overwrite it
    with pytest.raises(SystemExit, match="--resume"):
        main(["train", "mlp", "--data", "halfmoons", "--epochs", "3", "--out", str(out), "--no-progress"])
    assert main(["train", "mlp", "--data", "halfmoons", "--epochs", "3", "--out", str(out), "--no-progress",
                 "--resume"]) == 0
    resumed = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    # both commands that trained the run are on record; the first is the run's command, the times add up
    assert [s["epochs_done"] for s in resumed["sessions"]] == [2, 3]
    assert resumed["command"] == metrics["command"] and "--resume" in resumed["sessions"][1]["command"]
    assert resumed["wall_clock_s"] == pytest.approx(sum(s["wall_clock_s"] for s in resumed["sessions"]), abs=0.02)


def test_with_sessions_reads_a_metrics_file_from_before_sessions():
    from dgmlab.cli import with_sessions

    old = {"command": "python -m dgmlab train adgm", "epochs_done": 7, "device": "cpu", "machine": "m",
           "wall_clock_s": 100.0, "eval": {"test_error": 1.0}}
    merged = with_sessions(old, {"command": "python -m dgmlab train adgm --resume", "epochs_done": 9,
                                 "device": "cpu", "machine": "m", "wall_clock_s": 50.0})
    assert merged["command"] == "python -m dgmlab train adgm" and merged["wall_clock_s"] == 150.0
    assert [s["epochs_done"] for s in merged["sessions"]] == [7, 9] and "eval" not in merged
    assert with_sessions(None, {"command": "c", "wall_clock_s": 1.0})["sessions"] == [{"command": "c", "wall_clock_s": 1.0}]


def test_unknown_model_and_dataset(tmp_path, capsys):
    assert main(["train", "nope", "--data", "halfmoons", "--out", str(tmp_path)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert main(["train", "mlp", "--data", "cifar", "--out", str(tmp_path)]) == 2
    assert "unknown dataset 'cifar'" in capsys.readouterr().err
    assert main(["train", "mlp", "--data", "halfmoons", "--labels", "7", "--out", str(tmp_path)]) == 2
    assert "six fixed labelled points" in capsys.readouterr().err
    assert main(["train", "mlp", "--data", "halfmoons", "--set", "depth=3", "--out", str(tmp_path)]) == 2
    assert "has no option" in capsys.readouterr().err


def test_mnist_labelled_mlp_trains_on_the_labels_only(tmp_path, mnist_available):
    out = tmp_path / "run"
    rc = main(["train", "mlp", "--data", "mnist", "--labels", "100", "--epochs", "1", "--out", str(out),
               "--n-test", "500", "--no-progress"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labels"] == 100 and 0 <= metrics["final"]["test_error"] <= 100
