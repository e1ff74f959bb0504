"""The runs of the first GPU session (`scripts/gpu_session.py`) shipped in ``dgmlab/pretrained/``, and the twelve
chapter-5.1 runs that replaced their GPU snapshots with longer runs of the same commands on CPU cores
(``scripts/lvae_runs.sh``).

Weights: the depth-5 VAE, VAE+BN+WU and LVAE+BN+WU (chapter 5.1), the CaGeM with a 2-D z2 (Fig 4.9) and FAME
(chapter 5.2). Metrics only: the groups ``lvae-variants``, ``lvae-gpu-snapshots`` (the two replaced GPU records, the
FAME page's reference), ``cagem-mnist``, ``fame-variants`` and ``avae-mnist-runs`` (the GPU snapshot of the one-layer AVAE and two CPU runs of
its MNIST recipe, one and two layers). Every file must say how it was made, agree with its own command, and the
weights must reproduce the recorded numbers.
"""

from __future__ import annotations

import importlib.util
import shlex
from pathlib import Path

import pytest
import torch

from dgmlab import pretrained
from dgmlab.data import load_data
from dgmlab.training import evaluate

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = {"vae-d5-mnist": "hvae", "vae-bn-wu-d5-mnist": "hvae", "lvae-bn-wu-d5-mnist": "lvae",
           "cagem2d-mnist100": "cagem", "fame-mnist": "fame"}
GROUPS = {"lvae-variants": 12, "lvae-gpu-snapshots": 2, "cagem-mnist": 2, "fame-variants": 2, "avae-mnist-runs": 3}
TOTAL_BUDGET = 60 * 10**6  # all shipped checkpoints together


def _session():
    spec = importlib.util.spec_from_file_location("gpu_session", ROOT / "scripts" / "gpu_session.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_all_shipped_checkpoints_fit_the_budget():
    total = sum(pretrained.path(n).stat().st_size for n in pretrained.available())
    assert total <= TOTAL_BUDGET, f"shipped checkpoints take {total / 1e6:.1f} MB; the budget is 60 MB"


@pytest.mark.parametrize("name,model", WEIGHTS.items())
def test_weights_load_and_match_their_command(name, model):
    state = torch.load(pretrained.path(name), map_location="cpu", weights_only=True)
    assert state["model"] == model and state["optimizer"] is None
    assert all(v.dtype == torch.float16 for v in state["state_dict"].values() if v.is_floating_point())
    m = pretrained.metrics(name)
    for key in ("command", "seed", "wall_clock_s", "machine", "history", "config", "eval"):
        assert key in m, f"{name}/metrics.json lacks {key!r}"
    args = shlex.split(m["command"])
    assert args[:4] == ["python", "-m", "dgmlab", "train"] and args[4] == model
    for flag, value in zip(args, args[1:]):
        if flag == "--set":  # every option of the command is in the model's recorded config
            key, raw = value.split("=", 1)
            assert str(m["config"][key]) == raw, (name, key)
    assert m["epochs_done"] == len(m["history"]) == state["epoch"]
    loaded = pretrained.load_pretrained(name, expect=model, device="cpu")
    assert not loaded.training


@pytest.mark.parametrize("name", ["vae-d5-mnist", "lvae-bn-wu-d5-mnist"])
def test_shipped_ladder_weights_reproduce_their_test_bound(name):
    # One posterior sample per test point: the mean over 10 000 points moves by about 0.1 nats between draws, and
    # float16 weights move it by less than that.
    model = pretrained.load_pretrained(name, device="cpu")
    torch.manual_seed(0)
    ours = evaluate(model, load_data("mnist"))
    recorded = pretrained.metrics(name)["final"]
    assert ours["test_elbo"] == pytest.approx(recorded["test_elbo"], abs=0.6)
    # the per-layer KL too (active-unit counts are not compared: units near the 0.01-nat threshold flip with the
    # Monte Carlo KL estimate of the bottom-up model's lower layers)
    for i in range(1, 6):
        assert ours[f"test_kl_layer{i}"] == pytest.approx(recorded[f"test_kl_layer{i}"], abs=0.3), i


@pytest.mark.parametrize("group,count", GROUPS.items())
def test_metric_groups_are_complete_and_consistent(group, count):
    runs = pretrained.run_group(group)
    assert len(runs) == count
    for key, m in runs.items():
        assert m["epochs_done"] == len(m["history"]) >= 1, key
        assert m["machine"].startswith(("cuda: NVIDIA H200", "cpu: ")), key
        assert all(s["machine"] == m["machine"] for s in m.get("sessions", [])), key   # one kind of machine per run
        assert m["eval"]["machine"].split(":")[0] == m["machine"].split(":")[0], key
        ll = [k for k in m["eval"] if k.startswith("test_log_likelihood_iw")]
        assert len(ll) == 1 and m["eval"][ll[0]] < 0, key
        # a log-likelihood estimate never sits below its own one-sample bound by much (L_k >= L_1 on average)
        assert m["eval"][ll[0]] >= m["eval"]["test_elbo"] - 1.0, key


@pytest.mark.parametrize("name,layers", [("avae-bn-mnist", 1), ("avae2-bn-mnist", 2)])
def test_avae_cpu_runs_follow_the_mnist_recipe_past_the_warm_up(name, layers):
    from dgmlab.models import get_model_class

    m = pretrained.run_group("avae-mnist-runs")[name]
    recipe_model, _ = get_model_class("avae").recipe("mnist")
    assert all(m["config"][k] == v for k, v in recipe_model.items()), name
    assert m["config"]["layers"] == layers and m["machine"].startswith("cpu: ")
    assert shlex.split(m["command"])[:5] == ["python", "-m", "dgmlab", "train", "avae"]
    assert ("layers=2" in m["command"]) == (layers == 2)
    # trained past the warm-up: the last epochs were on the full bound, and the reported bound is untempered
    assert m["history"][-1]["train_temperature"] == 1.0 and m["epochs_done"] > m["config"]["warmup_epochs"]
    assert m["eval"]["checkpoint"].endswith("model.pt") and m["eval"]["iw"] == 5000


@pytest.mark.parametrize("group", ["lvae-variants", "lvae-gpu-snapshots"])
def test_per_unit_kl_history_sums_to_the_layer_kl(group):
    for key, m in pretrained.run_group(group).items():
        depth = int(key.rsplit("-d", 1)[1])
        recorded = [r for r in m["history"] if "test_unit_kl_layer1" in r]
        # a run begun before the loop recorded per-unit KL lacks it in its first epochs only
        assert recorded and recorded == m["history"][len(m["history"]) - len(recorded):], key
        for record in recorded:
            for i in range(1, depth + 1):
                units = record[f"test_unit_kl_layer{i}"]
                assert len(units) == (64, 32, 16, 8, 4)[i - 1]
                assert sum(units) == pytest.approx(record[f"test_kl_layer{i}"], abs=1e-3), (key, i)


def test_session_jobs_cover_every_shipped_run_and_smoke_shrinks_them():
    session = _session()
    names = {j["name"] for j in session.jobs()}
    assert set(pretrained.run_group("lvae-variants")) <= names
    assert {"cagem-mnist100", "cagem2d-mnist100", "fame-mnist", "fame_noconcat-mnist", "avae-mnist"} <= names
    for job in session.jobs():
        small = session.smoke(job)
        assert "--epochs 2" in small["train"] and "--n-train 600" in small["train"]
        assert small["dir"].startswith("runs/smoke/") and "--iw 8" in small["eval"]


def test_pack_exports_weights_and_metrics_within_the_transfer_limits(tmp_path):
    import tarfile

    session = _session()
    run = tmp_path / "runs" / "a"
    run.mkdir(parents=True)
    # a real run folder: the shipped checkpoint and its metrics stand in for a finished run
    (run / "model.pt").write_bytes(pretrained.path("vae-d5-mnist").read_bytes())
    (run / "metrics.json").write_text(pretrained.path("vae-d5-mnist").with_name("metrics.json").read_text())
    session.ROOT = tmp_path
    logs = []
    session.pack([{"name": "a", "dir": "runs/a", "pack": "grp"}, {"name": "b", "dir": "runs/b", "pack": None}],
                 tmp_path / "out", logs.append)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["grp.tar", "metrics.tar.gz"]
    with tarfile.open(tmp_path / "out" / "grp.tar") as tar:
        assert sorted(tar.getnames()) == ["a", "a/metrics.json", "a/model.pt"]
    with tarfile.open(tmp_path / "out" / "metrics.tar.gz") as tar:
        assert tar.getnames() == ["a/metrics.json"]
    assert any("grp: packed a" in line for line in logs)


def test_a_run_starts_only_in_a_free_slot_and_only_with_time_left(monkeypatch):
    import threading
    import time
    from types import SimpleNamespace

    session = _session()
    started = []
    monkeypatch.setattr(session, "_train_and_evaluate", lambda job, *a: started.append(job["name"]))
    args = SimpleNamespace(total_s=10.0, pack_s=1.0, train_s=5.0, grace_s=1.0)
    logs = []
    session.run_job({"name": "now"}, args, time.time(), logs.append, threading.Semaphore(1))
    session.run_job({"name": "late"}, args, time.time() - 5.0, logs.append, threading.Semaphore(1))
    assert started == ["now"]
    assert any(line.startswith("late: not started") for line in logs)
    busy = threading.Semaphore(1)
    busy.acquire()  # the only slot is taken: the run waits for it
    t = threading.Thread(target=session.run_job, args=({"name": "queued"}, args, time.time(), logs.append, busy))
    t.start()
    time.sleep(0.2)
    assert started == ["now"]
    busy.release()
    t.join(timeout=5)
    assert started == ["now", "queued"]
