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
