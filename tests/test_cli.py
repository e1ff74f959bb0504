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


def test_halfmoons_recipe_is_the_default_without_any_set(tmp_path):
    """`train adgm --data halfmoons --labels 6` is the thesis' experiment: 2x100 networks, a = z = 10, batches of
    100 unlabelled points plus the 6 labelled ones, BN on, 10 epochs (cut to 2 batches here)."""
    out = tmp_path / "run"
    assert main(["train", "adgm", "--data", "halfmoons", "--labels", "6", "--max-batches", "2", "--epochs", "1",
                 "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["hidden"] == [100, 100] and m["config"]["a_dim"] == 10 and m["config"]["z_dim"] == 10
    assert m["config"]["batch_norm"] is True and m["config"]["likelihood"] == "gaussian"
    assert m["train_config"]["labelled_batch_size"] == 6 and m["train_config"]["lr"] == 3e-4
    from dgmlab.models import get_model_class

    model, train = get_model_class("adgm").recipe("halfmoons")
    assert train["epochs"] == 10 and model == {"hidden": (100, 100), "z_dim": 10, "a_dim": 10}
    model, train = get_model_class("m2").recipe("mnist")
    assert model == {} and train["epochs"] == 1000 and train["batch_size"] == 100  # MNIST: the class defaults
    # a --set still wins over the recipe
    out2 = tmp_path / "run2"
    assert main(["train", "m2", "--data", "halfmoons", "--labels", "6", "--max-batches", "1", "--epochs", "1",
                 "--set", "hidden=(32,)", "--set", "batch_norm=False", "--out", str(out2), "--no-progress"]) == 0
    m2 = json.loads((out2 / "metrics.json").read_text())
    assert m2["config"]["hidden"] == [32] and m2["config"]["batch_norm"] is False and m2["config"]["z_dim"] == 10


def test_list_shows_every_recipe(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "adgm --data halfmoons" in text and "sdgm --data mnist" in text and "a_dim=10" in text


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "--epochs must be a positive integer"),
    (["--epochs", "-3"], "--epochs must be a positive integer"),
    (["--batch-size", "0"], "--batch-size must be a positive integer"),
    (["--lr", "-0.1"], "--lr must be positive"),
    (["--set", "hidden=(100,"], "cannot parse --set hidden=(100,"),
    (["--set", "z_dim=ten"], "does not fit the option z_dim"),
    (["--set", "beta=[1"], "cannot parse --set beta=[1"),
    (["--set", "batch_norm=1"], "does not fit the option batch_norm"),
    (["--set", "nothing"], "--set expects KEY=VALUE"),
    (["--time-limit", "0"], "--time-limit must be a positive number of seconds"),
    (["--time-limit", "-5"], "--time-limit must be a positive number of seconds"),
])
def test_bad_training_options_give_one_clear_line(tmp_path, args, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as err:
        main(["train", "m2", "--data", "halfmoons", "--labels", "6", "--out", str(out), "--no-progress", *args])
    text = str(err.value)
    assert message in text and "\n" not in text
    assert not (out / "model.pt").exists()  # nothing was trained


def test_unwritable_out_fails_before_training(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit, match="cannot write to --out"):
        main(["train", "m2", "--data", "halfmoons", "--labels", "6", "--out", str(blocker / "run"), "--no-progress"])


def test_bad_options_from_the_shell_print_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "dgmlab", "train", "adgm", "--data", "halfmoons", "--labels", "6",
                          "--epochs", "0", "--out", str(tmp_path / "r")], capture_output=True, text=True)
    assert res.returncode != 0 and res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert res.stderr.startswith("error: --epochs")


def test_unsupervised_cagem_trains_without_labels(tmp_path, mnist_available):
    """CaGeM-0: ``n_clusters`` makes the model unsupervised, so the loop feeds it plain ``{"x": ...}`` batches
    (the instance's setting, not the class's) and no ``--labels`` is needed."""
    out = tmp_path / "cagem0"
    rc = main(["train", "cagem", "--data", "mnist", "--set", "n_clusters=5", "--set", "hidden=(32,)",
               "--set", "hidden_z=(16,)", "--epochs", "1", "--max-batches", "2", "--n-test", "100", "--out", str(out),
               "--no-progress"])
    assert rc == 0
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert "test_cluster_accuracy" in final and "test_error" not in final


def test_labels_all_labels_every_training_point(tmp_path):
    out = tmp_path / "m2all"
    assert main(["train", "m2", "--data", "halfmoons", "--labels", "all", "--epochs", "1", "--max-batches", "2",
                 "--out", str(out), "--no-progress"]) == 0
    assert json.loads((out / "metrics.json").read_text())["labels"] == "all"


@pytest.mark.parametrize("args, message", [
    (["--labels", "some"], "expected a positive integer or 'all'"),
    (["--labels", "0"], "--labels must be a positive integer or 'all'"),
    (["--inputs", "complex"], "--inputs selects the sensors of --data pv"),
])
def test_bad_labels_and_inputs_give_one_clear_line(tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as err:
        main(["train", "m2", "--data", "halfmoons", "--out", str(tmp_path / "r"), "--no-progress", *args])
    text = str(err.value) + capsys.readouterr().err
    assert message in text


def test_time_limit_stops_a_run_that_resume_continues(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "mlp", "--data", "halfmoons", "--epochs", "5", "--out", str(out), "--no-progress"]
    assert main([*base, "--time-limit", "1e-6"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_done"] == 1 and "test_error" in metrics["final"]
    assert "time limit" in capsys.readouterr().out
    assert main([*base, "--resume"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_done"] == 5 and len(metrics["sessions"]) == 2
