import json

import pytest
import torch

from dgmlab.checkpoints import CheckpointError, load_checkpoint, load_model, save_checkpoint
from dgmlab.data import load_data, make_config
from dgmlab.models import get_model_class
from dgmlab.runtime import seed_everything
from dgmlab.training import TrainConfig, fit, load_or_train


def _mlp(data, seed=0):
    seed_everything(seed)
    cls = get_model_class("mlp")
    return cls(make_config(cls.Config, data, hidden=(16,)))


def test_fit_records_history_and_lowers_error():
    data = load_data("halfmoons")
    model = _mlp(data)
    history = fit(model, data, TrainConfig(epochs=5, lr=1e-2, batch_size=50, progress=False))
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert {"train_loss", "train_error", "test_error", "time_s"} <= set(history[-1])
    assert history[-1]["test_error"] < history[0]["test_error"] or history[-1]["test_error"] < 5
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_resume_matches_uninterrupted_run(tmp_path):
    data = load_data("halfmoons", labels=None)
    cfg = TrainConfig(epochs=4, lr=5e-3, batch_size=64, seed=7, progress=False)
    full = _mlp(data)
    h_full = fit(full, data, cfg, checkpoint=tmp_path / "full.pt")

    part = _mlp(data)
    fit(part, data, TrainConfig(**{**cfg.__dict__, "epochs": 2}), checkpoint=tmp_path / "part.pt")
    assert load_checkpoint(tmp_path / "part.pt")["epoch"] == 2
    resumed = _mlp(data, seed=123)  # different init: the checkpoint must win
    h_resumed = fit(resumed, data, cfg, checkpoint=tmp_path / "part.pt")
    assert [h["epoch"] for h in h_resumed] == [1, 2, 3, 4]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
    assert h_resumed[-1]["test_error"] == pytest.approx(h_full[-1]["test_error"])


def test_checkpoint_roundtrip_and_wrong_model(tmp_path):
    data = load_data("halfmoons")
    model = _mlp(data)
    save_checkpoint(tmp_path / "m.pt", model, epoch=3, history=[{"epoch": 1}])
    loaded = load_model(tmp_path / "m.pt", expect="mlp", device="cpu")
    x = data.x_test[:10]
    assert torch.allclose(loaded(x), model.eval()(x))
    with pytest.raises(CheckpointError, match="holds a 'mlp' model, not 'adgm'"):
        load_model(tmp_path / "m.pt", expect="adgm")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable dgmlab checkpoint"):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_model(tmp_path / "missing.pt")
    # no temporary files are left behind by the atomic writer
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.pt", "m.pt"]


def test_load_or_train_trains_then_loads(tmp_path):
    data = load_data("halfmoons")
    cfg = TrainConfig(epochs=2, lr=1e-2, progress=False)
    model, history = load_or_train("mlp", data, {"hidden": (8,)}, cfg, tmp_path / "m.pt")
    assert len(history) == 2
    again, history2 = load_or_train("mlp", data, {"hidden": (8,)}, cfg, tmp_path / "m.pt")
    assert history2 == json.loads(json.dumps(history))
    assert torch.allclose(again(data.x_test[:5]), model(data.x_test[:5]))


def test_bad_inputs_give_clear_errors():
    data = load_data("halfmoons")
    model = _mlp(data)
    with pytest.raises(ValueError, match=r"shape \(batch, 2\)"):
        model(torch.zeros(4, 3))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(4, 2, dtype=torch.long))
    out_of_range = {"x": torch.zeros(4, 2), "y": torch.tensor([0, 1, 2, 1])}
    with pytest.raises(ValueError, match="outside 0..1"):
        model.step(out_of_range, 0)
    with pytest.raises(TypeError, match="integer class indices"):
        model.step({"x": torch.zeros(4, 2), "y": torch.zeros(4)}, 0)
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        get_model_class("nope")
    with pytest.raises(ValueError, match="has no option"):
        make_config(get_model_class("mlp").Config, data, depth=3)


@pytest.mark.parametrize("setting,labels", [("supervised", None), ("unsupervised", None), ("semi-supervised", 6)])
def test_resident_batches_follow_the_same_order(setting, labels):
    # Without binarisation the device-resident path must cut exactly the batches of the host path.
    data = load_data("halfmoons", labels=labels)
    from dgmlab.data import iterate_batches

    host = list(iterate_batches(data, setting, 50, torch.Generator().manual_seed(3), 100, "cpu", resident=False))
    kept = list(iterate_batches(data, setting, 50, torch.Generator().manual_seed(3), 100, "cpu", resident=True))
    assert len(host) == len(kept) > 1
    for a, b in zip(host, kept):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_resident_binarisation_is_fresh_binary_and_the_labelled_subset_keeps_its_own_copy():
    data = load_data("mnist", n_train=300, n_test=50)
    from dgmlab.data import iterate_batches

    gen = torch.Generator().manual_seed(0)
    first = [b["x"] for b in iterate_batches(data, "unsupervised", 100, gen, device="cpu", resident=True)]
    second = [b["x"] for b in iterate_batches(data, "unsupervised", 100, gen, device="cpu", resident=True)]
    assert len(first) == 3 and set(torch.unique(first[0]).tolist()) <= {0.0, 1.0}
    assert not torch.equal(torch.cat(first), torch.cat(second))  # a new seed, order and draw every epoch
    labelled = load_data("mnist", labels=20, n_train=300, n_test=50)
    labelled.resident("cpu")
    assert len(labelled.labelled_only().resident("cpu")["x_train"]) == 20


def test_resident_run_resumes_exactly(tmp_path):
    # The epoch seed of the device generator comes from the checkpointed host generator.
    data = load_data("mnist", n_train=200, n_test=50)
    cls = get_model_class("vae")

    def model():
        seed_everything(0)
        return cls(make_config(cls.Config, data, hidden=(16,), z_dim=2))

    cfg = TrainConfig(epochs=3, batch_size=50, seed=5, progress=False, resident=True)
    full = model()
    fit(full, data, cfg, checkpoint=tmp_path / "full.pt")
    part = model()
    fit(part, data, TrainConfig(**{**cfg.__dict__, "epochs": 1}), checkpoint=tmp_path / "part.pt")
    resumed = model()
    fit(resumed, data, cfg, checkpoint=tmp_path / "part.pt")
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k


def test_time_limit_stops_after_the_epoch_and_evaluates_it(tmp_path, capsys):
    data = load_data("halfmoons")
    history = fit(_mlp(data), data, TrainConfig(epochs=50, eval_every=10, progress=False, time_limit_s=1e-9),
                  checkpoint=tmp_path / "m.pt")
    assert len(history) == 1 and "test_error" in history[0]
    assert "time limit" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "m.pt")["epoch"] == 1


def test_device_speed_switches_distribution_checks_off_only_off_the_cpu():
    from torch.distributions import Distribution

    from dgmlab.runtime import device_speed

    before = Distribution._validate_args
    with device_speed("cpu"):
        assert Distribution._validate_args == before
    with device_speed("meta"):  # any device that is not the CPU
        assert Distribution._validate_args is False
    assert Distribution._validate_args == before
