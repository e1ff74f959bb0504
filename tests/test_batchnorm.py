"""Batch normalisation in the semi-supervised models, as in the authors' code: every hidden layer, labelled and
unlabelled passes normalised separately, only the unlabelled pass moves the running averages."""

import copy
import pytest
import torch

from dgmlab.checkpoints import CheckpointError, load_model, save_checkpoint
from dgmlab.models import get_model_class
from dgmlab.nn import BatchNorm, frozen_running_stats

MODELS = ["m2", "adgm", "sdgm", "adgm_det", "m1m2"]


def tiny(name: str, **kw):
    torch.manual_seed(0)
    cls = get_model_class(name)
    cfg = dict(x_dim=5, n_classes=3, likelihood="bernoulli", hidden=(16, 16), z_dim=2, fixed_alpha=2.0)
    if name != "m2" and name != "m1m2":
        cfg["a_dim"] = 3
    if name == "m1m2":
        cfg.update(m1_hidden=(8,), m1_z_dim=3, m1_epochs=0, hidden=(8,))
    cfg.update(kw)
    return cls(cls.Config(**cfg))


def running_stats(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def batch(n_u=20, n_l=6):
    g = torch.Generator().manual_seed(1)
    return {"x_u": torch.rand(n_u, 5, generator=g).bernoulli(generator=g),
            "x_l": torch.rand(n_l, 5, generator=g).bernoulli(generator=g),
            "y_l": torch.arange(n_l) % 3}


@pytest.mark.parametrize("name", MODELS)
def test_batch_norm_is_on_by_default_in_every_network(name):
    m = tiny(name)
    networks = [mod for mod in m.modules() if hasattr(mod, "body")]
    assert networks and all(any(isinstance(l, BatchNorm) for l in net.body) for net in networks)
    plain = tiny(name, batch_norm=False)
    assert not any(isinstance(l, BatchNorm) for l in plain.modules())


@pytest.mark.parametrize("name", ["m2", "adgm", "sdgm", "adgm_det"])
def test_labelled_pass_leaves_the_running_statistics_alone(name):
    m = tiny(name).train()
    b = batch()
    before = running_stats(m)
    with frozen_running_stats(m):
        m.labelled_bound(b["x_l"], b["y_l"])
    after = running_stats(m)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # without the freeze the same pass would have moved them: the test can tell the difference
    m.labelled_bound(b["x_l"], b["y_l"])
    assert any(not torch.equal(before[k], v) for k, v in running_stats(m).items())


@pytest.mark.parametrize("name", ["m2", "adgm", "sdgm"])
def test_a_training_step_updates_the_statistics_from_the_unlabelled_batch_only(name):
    """The first network sees x alone, so its running mean after one step is a function of the batch inputs: after
    ``step`` it must equal what the unlabelled pass alone produces, not the mix with the labelled points."""
    m = tiny(name).train()
    reference = copy.deepcopy(m)
    b = batch()
    m.step(b, epoch=0)
    reference.unlabelled_bound(b["x_u"])
    first = "q_a" if name != "m2" else "q_y"
    key = f"{first}.body.1.running_mean"
    assert torch.allclose(m.state_dict()[key], reference.state_dict()[key])
    mixed = copy.deepcopy(reference)
    mixed.labelled_bound(b["x_l"], b["y_l"])
    assert not torch.allclose(mixed.state_dict()[key], m.state_dict()[key])
    assert int(m.state_dict()[f"{first}.body.1.num_batches_tracked"]) == 1


def test_frozen_layer_still_normalises_with_the_batch_statistics():
    bn = BatchNorm(4).train()
    x = torch.randn(50, 4) * 3 + 2
    with frozen_running_stats(bn):
        y = bn(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(0, unbiased=False), torch.ones(4), atol=1e-3, rtol=0)
    assert torch.equal(bn.running_mean, torch.zeros(4)) and int(bn.num_batches_tracked) == 0
    assert bn.update_running_stats  # restored after the block


@pytest.mark.parametrize("name", ["m2", "adgm", "sdgm", "adgm_det"])
def test_eval_mode_is_deterministic_and_per_point(name):
    m = tiny(name).train()
    for _ in range(3):  # move the running averages away from their initial values
        m.step(batch(), epoch=0)
    m.eval()
    x = batch()["x_u"]
    eps = {"z": torch.randn(2, 3, len(x), 2)}
    if name in ("adgm", "sdgm"):
        eps["a"] = torch.randn(2, len(x), 3)
    whole = m.unlabelled_bound(x, noise=eps).value
    again = m.unlabelled_bound(x, noise=eps).value
    assert torch.equal(whole, again)
    # a point's bound does not depend on the other points of the batch once the running averages are used
    half = {k: v[..., :5, :] for k, v in eps.items()}
    torch.testing.assert_close(m.unlabelled_bound(x[:5], noise=half).value, whole[:5])


def test_checkpoint_from_before_batch_norm_still_loads(tmp_path):
    """Checkpoints written before the option existed have no ``batch_norm`` key; they were trained without BN."""
    m = tiny("adgm", batch_norm=False)
    path = tmp_path / "model.pt"
    save_checkpoint(path, m)
    state = torch.load(path, weights_only=True)
    del state["config"]["batch_norm"]
    torch.save(state, path)
    loaded = load_model(path, expect="adgm", device="cpu")
    assert loaded.config.batch_norm is False
    assert not any(isinstance(l, BatchNorm) for l in loaded.modules())
    x = batch()["x_u"]
    torch.manual_seed(5)
    mine = m.eval().classify(x)
    torch.manual_seed(5)  # the same draws of a
    torch.testing.assert_close(loaded.classify(x), mine)


def test_checkpoint_whose_weights_do_not_fit_the_config_fails_clearly(tmp_path):
    m = tiny("m2", batch_norm=False)
    path = tmp_path / "model.pt"
    save_checkpoint(path, m)
    state = torch.load(path, weights_only=True)
    state["config"]["batch_norm"] = True  # claims BN but holds no BN weights
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path, device="cpu")


def test_free_bits_cancel_the_pull_of_a_small_kl_a():
    m = tiny("adgm", free_bits_a=100.0).eval()
    x = batch()["x_u"]
    bound = m.unlabelled_bound(x)
    kl_a = bound.terms["kl_a"].mean()
    assert kl_a < 100.0
    torch.testing.assert_close(m._free_bits(bound), kl_a - 100.0)
    # the corrected objective has no gradient through KL(a): d/dθ [U + KL(a) - const] = d/dθ [U + KL(a)]
    assert tiny("adgm")._free_bits(bound) == 0.0
    with pytest.raises(ValueError, match="free_bits_a"):
        tiny("adgm", free_bits_a=-1.0)


def test_labelled_pass_with_running_averages_is_the_eval_mode_bound():
    """The ablation ``bn_labelled='running'``: the labelled pass inside a training step sees the running averages,
    so its bound equals the eval-mode bound for the same noise; the default differs (batch statistics)."""
    m = tiny("m2", bn_labelled="running").train()
    for _ in range(2):
        m.step(batch(), epoch=0)
    b = batch()
    eps = {"z": torch.randn(1, len(b["x_l"]), 2)}
    from dgmlab.nn import running_stats_mode

    with running_stats_mode(m):
        inside = m.labelled_bound(b["x_l"], b["y_l"], noise=eps).value
    assert all(l.training for l in m.modules() if isinstance(l, BatchNorm))  # restored
    expected = m.eval().labelled_bound(b["x_l"], b["y_l"], noise=eps).value
    torch.testing.assert_close(inside, expected)
    with pytest.raises(ValueError, match="bn_labelled"):
        tiny("m2", bn_labelled="other")


def test_bn_labelled_auto_uses_batch_statistics_only_when_every_point_is_labelled():
    from dgmlab.models.adgm import SDGMConfig

    def cfg(n_labelled):
        return SDGMConfig(x_dim=4, n_classes=3, likelihood="gaussian", n_train=90, n_labelled=n_labelled,
                          bn_labelled="auto")

    assert cfg(90).bn_labelled == "batch"  # the labelled batches are random samples of the training inputs
    assert cfg(30).bn_labelled == "running"  # a class-balanced subset is not
    with pytest.raises(ValueError, match="'auto'"):
        SDGMConfig(x_dim=4, n_classes=3, bn_labelled="sometimes")
