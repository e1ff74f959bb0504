"""CaGeM, the cluster-aware generative model (thesis section 4.3, eqs. 4.24-4.33; Appendix C sections 3-5)."""

import copy
import itertools
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from dgmlab.checkpoints import load_model, save_checkpoint
from dgmlab.models import get_model_class
from dgmlab.models.cagem import CaGeM, CaGeMConfig, cluster_accuracy
from dgmlab.nn import frozen_running_stats

X_DIM, N_CLASSES, Z1, Z2 = 5, 3, 2, 2


def tiny(**kw):
    torch.manual_seed(0)
    cfg = dict(x_dim=X_DIM, n_classes=N_CLASSES, likelihood="bernoulli", hidden=(16,), hidden_z=(8,), z_dim=Z1,
               z2_dim=Z2, fixed_alpha=2.0)
    cfg.update(kw)
    return CaGeM(CaGeMConfig(**cfg)).eval()  # eval mode: batch normalisation treats every point alone


def glorot_everywhere(m):
    """Glorot weights in the Gaussian heads too: posteriors far from the priors, so the bounds differ visibly."""
    with torch.no_grad():
        for layer in m.modules():
            if isinstance(layer, torch.nn.Linear):
                torch.nn.init.xavier_normal_(layer.weight)
    return m


def binary(n, d=X_DIM, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g, dtype=dtype).bernoulli(generator=g)


def brute_force_unlabelled(m, x, eps1, eps2):
    """U(x) of eq. 4.27, one network pass per cluster, every term written out."""
    k = m.n_clusters
    q_z1 = m.q_z1(x).base_dist
    z1 = q_z1.loc + q_z1.scale * eps1  # (S, B, z1)
    log_qz1 = Normal(q_z1.loc, q_z1.scale).log_prob(z1).sum(-1)
    q_y = torch.softmax(m.q_y(z1, x).logits, -1)  # (S, B, K)
    total = -(q_y * q_y.log()).sum(-1)  # H[q(y|z1,x)]
    for y in range(k):
        y_oh = F.one_hot(torch.full((len(x),), y), k).to(x.dtype)
        q_z2 = m.q_z2(z1, y_oh, x).base_dist  # skip connection from x
        z2 = q_z2.loc + q_z2.scale * eps2[:, y]
        log_qz2 = Normal(q_z2.loc, q_z2.scale).log_prob(z2).sum(-1)
        logits = m.p_x(z1, y_oh).base_dist.logits  # p(x|z1,y), Bernoulli
        log_px = (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum(-1)
        p_z1 = m.p_z1(z2, y_oh).base_dist
        log_pz1 = Normal(p_z1.loc, p_z1.scale).log_prob(z1).sum(-1)
        log_py = torch.log_softmax(m.p_y(z2).logits, -1)[..., y]
        log_pz2 = Normal(0.0, 1.0).log_prob(z2).sum(-1)
        f = log_px + log_pz1 + log_py + log_pz2 - log_qz1 - log_qz2
        total = total + q_y[..., y] * f
    return total.mean(0)


# ------------------------------------------------------------------------------------------------- the bounds
@pytest.mark.parametrize("n_clusters", [0, 4])
def test_batched_cluster_sum_equals_a_loop_over_clusters(n_clusters):
    m = glorot_everywhere(tiny(n_clusters=n_clusters))
    x, S, K = binary(6), 3, m.n_clusters
    eps1, eps2 = torch.randn(S, 6, Z1), torch.randn(S, K, 6, Z2)
    batched = m.unlabelled_bound(x, noise={"z1": eps1, "z2": eps2})
    torch.testing.assert_close(batched.value, brute_force_unlabelled(m, x, eps1, eps2), rtol=1e-5, atol=1e-5)
    t = batched.terms
    torch.testing.assert_close(batched.value, t["log_px"] + t["log_py"] - t["kl_z1"] - t["kl_z2"] + t["entropy_y"])


def test_one_sample_unlabelled_bound_is_the_q_weighted_labelled_bounds():
    """One z1: U(x) = sum_y q(y|z1,x) [ELBO_l(x, y) - log q(y|z1,x)] with the same z1 and z2_y draws."""
    m = glorot_everywhere(tiny())
    x = binary(6)
    eps1, eps2 = torch.randn(1, 6, Z1), torch.randn(1, N_CLASSES, 6, Z2)
    u = m.unlabelled_bound(x, noise={"z1": eps1, "z2": eps2}).value
    lab = [m.labelled_bound(x, torch.full((6,), y), noise={"z1": eps1, "z2": eps2[:, y]}) for y in range(N_CLASSES)]
    q_y = lab[0].class_log_probs[0].exp()
    parts = torch.stack([b.value for b in lab], 1)
    torch.testing.assert_close(u, (q_y * (parts - q_y.log())).sum(1), rtol=1e-5, atol=1e-5)


def test_cascade_classifier_by_hand():
    """p(y|x) (4.32) for one z1: sum_c q(c|z1,x) p(y|z2^c), z2^c ~ q(z2|x,c,z1)."""
    m = glorot_everywhere(tiny())
    x = binary(4)
    eps1, eps2 = torch.randn(1, 4, Z1), torch.randn(1, N_CLASSES, 4, Z2)
    log_q, log_p = m.classifier_log_probs(x, 1, noise={"z1": eps1, "z2": eps2})
    q_z1 = m.q_z1(x).base_dist
    z1 = q_z1.loc + q_z1.scale * eps1[0]
    q_y = torch.softmax(m.q_y(z1, x).logits, -1)
    expected = torch.zeros(4, N_CLASSES)
    for c in range(N_CLASSES):
        c_oh = F.one_hot(torch.full((4,), c), N_CLASSES).float()
        q_z2 = m.q_z2(z1, c_oh, x).base_dist
        z2 = q_z2.loc + q_z2.scale * eps2[0, c]
        expected += q_y[:, c:c + 1] * torch.softmax(m.p_y(z2).logits, -1)
    torch.testing.assert_close(log_q[0].exp(), q_y)
    torch.testing.assert_close(log_p[0].exp(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(1, 4))


# -------------------------------------------------------------------------------------------- log-likelihood
def test_one_importance_sample_with_y_summed_is_at_least_the_bound_for_the_same_noise():
    m = glorot_everywhere(tiny()).double()
    x = binary(8, dtype=torch.float64)
    noise = {"z1": torch.randn(1, 8, Z1, dtype=torch.float64), "z2": torch.randn(1, N_CLASSES, 8, Z2, dtype=torch.float64)}
    with torch.no_grad():
        l_1 = m._log_weights(x, 1, noise)[0]
        u = m.unlabelled_bound(x, noise=noise).value
    assert (l_1 >= u - 1e-9).all()  # Jensen over y, point by point
    assert (l_1 > u + 1e-3).any()


def test_importance_weighted_estimate_grows_with_k():
    m = glorot_everywhere(tiny()).double()
    x = binary(30, dtype=torch.float64)
    torch.manual_seed(1)
    with torch.no_grad():
        elbo = m.unlabelled_bound(x, samples=400).value.mean()
        log_w = m._log_weights(x, 2000)  # (2000, B): estimates of E[L_k] for k = 1, 10, 100 from the same draws
        l_k = {k: (torch.logsumexp(log_w.view(-1, k, 30), 1) - math.log(k)).mean() for k in (1, 10, 100)}
        chunked = m.log_likelihood(x, k=300, chunk=64).mean()
    assert elbo < l_k[1] + 0.02
    assert l_k[1] + 0.1 < l_k[10] < l_k[100] and chunked > l_k[10]


def exact_log_px(m, xs, n2=601, lim2=9.0, h1=0.03, lim1=40.0):
    """log p(x) of a model with 1-d z1 and z2: the sum over y exactly, the double integral by a Riemann sum on a
    grid (z2 in [-lim2, lim2], where N(0, 1) lives; z1 on a wider grid, as p(z1|y,z2) may be broad). The integrands
    are smooth Gaussians, so the sum converges fast."""
    g2 = torch.linspace(-lim2, lim2, n2, dtype=torch.float64)
    g1 = torch.arange(-lim1, lim1 + h1 / 2, h1, dtype=torch.float64)
    k = m.n_clusters
    out = []
    with torch.no_grad():
        log_pz2 = Normal(0.0, 1.0).log_prob(g2)
        log_py = torch.log_softmax(m.p_y(g2[:, None]).logits, -1)  # (N2, K)
        for x in xs:
            per_y = []
            for y in range(k):
                y2 = F.one_hot(torch.full((len(g2),), y), k).double()
                y1 = F.one_hot(torch.full((len(g1),), y), k).double()
                p_z1 = m.p_z1(g2[:, None], y2).base_dist
                log_pz1 = Normal(p_z1.loc, p_z1.scale).log_prob(g1[None, :])  # (N2, N1)
                log_px = m.p_x(g1[:, None], y1).log_prob(x)  # (N1,)
                per_y.append(torch.logsumexp((log_pz2 + log_py[:, y])[:, None] + log_pz1 + log_px[None, :], (0, 1)))
            out.append(torch.logsumexp(torch.stack(per_y), 0))
    return torch.stack(out) + (g2[1] - g2[0]).log() + math.log(h1)


def test_bounds_lie_below_the_exact_log_likelihood_of_an_enumerable_model():
    """1-d z1 and z2, two clusters, 3 binary pixels: log p(x) by quadrature, checked by sum_x p(x) = 1 over all
    eight images; then U(x) <= E[L_1] <= E[L_10] <= log p(x), and L_k approaches it."""
    torch.manual_seed(0)
    m = glorot_everywhere(CaGeM(CaGeMConfig(x_dim=3, n_classes=2, hidden=(8,), hidden_z=(8,), z_dim=1, z2_dim=1,
                                            fixed_alpha=1.0, batch_norm=False))).double().eval()
    with torch.no_grad():  # keep the spread of p(z1|y,z2) moderate so that the grid holds all of its mass
        m.p_z1.head.scale.weight.mul_(0.2)
    xs = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)
    log_p = exact_log_px(m, xs)
    assert abs(torch.logsumexp(log_p, 0).item()) < 1e-8  # the quadrature is a distribution over the 8 images
    torch.manual_seed(2)
    with torch.no_grad():
        u = m.unlabelled_bound(xs, samples=4000).value
        log_w = m._log_weights(xs, 4000)
        l_1 = log_w.mean(0)
        l_10 = (torch.logsumexp(log_w.view(400, 10, 8), 1) - math.log(10)).mean(0)
        l_big = m.log_likelihood(xs, k=20000, chunk=5000)
    tol = 0.03  # Monte Carlo error of the averages
    assert (u < l_1 + tol).all() and (l_1 < l_10 + tol).all() and (l_10 < log_p + tol).all()
    assert (l_big < log_p + tol).all()
    assert (log_p - u).mean() > 0.2  # the bound is visibly loose: the comparison means something
    assert (log_p - l_big).mean() < (log_p - l_10).mean() < (log_p - u).mean()


# --------------------------------------------------------------------------------------------- training
def semi_batch(n_u=20, n_l=6, seed=1):
    return {"x_u": binary(n_u, seed=seed), "x_l": binary(n_l, seed=seed + 1), "y_l": torch.arange(n_l) % N_CLASSES}


def running_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items()
            if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}


def test_labelled_passes_leave_the_running_statistics_alone():
    m = tiny().train()
    b = semi_batch()
    before = running_stats(m)
    with frozen_running_stats(m):
        m.labelled_bound(b["x_l"], b["y_l"])
        m.classifier_log_probs(b["x_l"], 1, detach_latents=True)
    assert all(torch.equal(before[k], v) for k, v in running_stats(m).items())
    m.labelled_bound(b["x_l"], b["y_l"])  # without the freeze the same pass moves them
    assert any(not torch.equal(before[k], v) for k, v in running_stats(m).items())


def test_a_step_updates_the_statistics_from_the_unlabelled_batch_only():
    m = tiny().train()
    reference = copy.deepcopy(m)
    b = semi_batch()
    torch.manual_seed(3)  # the unlabelled pass comes first in step: the same draws of z1 and z2
    m.step(b, epoch=0)
    torch.manual_seed(3)
    reference.unlabelled_bound(b["x_u"])
    assert running_stats(m).keys() == running_stats(reference).keys()
    for key, value in running_stats(reference).items():
        torch.testing.assert_close(running_stats(m)[key], value)
    assert int(m.state_dict()["q_z1.body.1.num_batches_tracked"]) == 1


@pytest.mark.parametrize("kind", ["semi", "x_only", "empty_labelled", "unsupervised"])
def test_step_gives_finite_gradients(kind):
    m = tiny(n_clusters=4 if kind == "unsupervised" else 0, warmup_epochs=10).train()
    b = semi_batch()
    batch = {"semi": b, "unsupervised": b, "x_only": {"x": b["x_u"]},
             "empty_labelled": {"x_u": b["x_u"], "x_l": b["x_u"][:0], "y_l": b["y_l"][:0]}}[kind]
    out = m.step(batch, epoch=3)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert out.metrics["temperature"] == pytest.approx(0.3)
    assert ("cross_entropy_p" in out.metrics) == (kind == "semi")


def test_labels_train_only_the_incoming_arrows_of_y():
    """Eq. 4.33: the cross-entropies are functions of theta_y (p(y|z2)) and phi_y (q(y|z1,x)) only."""
    m = tiny().train()
    b = semi_batch()
    with frozen_running_stats(m):
        ce_p, ce_q = m.classification_losses(b["x_l"], b["y_l"])
    (ce_p + ce_q).sum().backward()
    touched = {name for name, p in m.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert touched and all(name.startswith(("q_y.", "p_y.")) for name in touched), touched
    assert any(n.startswith("q_y.") for n in touched) and any(n.startswith("p_y.") for n in touched)
    # the cascade reaches phi_y through its weights q(c|z1,x) (Appendix C's H_p(theta_y, phi_y))
    m.zero_grad()
    with frozen_running_stats(m):
        ce_p, _ = m.classification_losses(b["x_l"], b["y_l"])
    ce_p.sum().backward()
    assert m.q_y.head.logits.weight.grad.abs().sum() > 0


def test_alpha_and_recipe():
    cfg = CaGeMConfig(x_dim=784, n_classes=10, n_train=60000, n_labelled=100)
    assert cfg.alpha == pytest.approx(60.0)  # beta = 0.1
    assert (cfg.hidden, cfg.hidden_z, cfg.z_dim, cfg.z2_dim, cfg.warmup_epochs) == ((1024, 1024), (512, 512), 64, 32, 100)
    assert cfg.batch_norm and cfg.classifier == "p" and cfg.clusters == 10 and not cfg.unsupervised
    model_opts, train = CaGeM.recipe("mnist")
    assert train["lr"] == 1e-3 and train["lr_decay"] == 0.75 and train["lr_decay_every"] == 50
    assert "source" in CaGeM.recipes["mnist"] and get_model_class("cagem") is CaGeM
    assert CaGeM.setting == "semi-supervised" and tiny(n_clusters=5).setting == "unsupervised"


# -------------------------------------------------------------------------------------------- evaluation
def test_cluster_accuracy_by_hand():
    clusters = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    y = torch.tensor([1, 1, 0, 2, 2, 0, 0, 1])
    # cluster 0 -> class 1 (2 of 3), cluster 1 -> class 2 (2 of 2), cluster 2 -> class 0 (2 of 3), cluster 3 empty
    assert cluster_accuracy(clusters, y, 4, 3) == pytest.approx(100.0 * 6 / 8)
    assert cluster_accuracy(torch.arange(8), y, 8, 3) == 100.0  # one cluster per point
    assert cluster_accuracy(torch.zeros(8, dtype=torch.long), y, 1, 3) == pytest.approx(100.0 * 3 / 8)
    with pytest.raises(ValueError, match="outside"):
        cluster_accuracy(torch.tensor([0, 5]), torch.tensor([0, 1]), 4, 3)
    with pytest.raises(ValueError, match="same length"):
        cluster_accuracy(torch.tensor([0, 1]), torch.tensor([0]), 4, 3)


def test_evaluate_reports_errors_or_cluster_accuracy():
    x, y = binary(12), torch.arange(12) % N_CLASSES
    semi = tiny().evaluate(x, y, batch_size=5)
    assert {"test_error", "test_error_q", "test_elbo", "test_recon", "test_kl_z1", "test_kl_z2", "test_log_py"} <= set(semi)
    assert 0 <= semi["test_error"] <= 100 and "test_cluster_accuracy" not in semi
    assert "test_error_p" in tiny(classifier="q").evaluate(x, y)
    unsup = tiny(n_clusters=5).evaluate(x, y, batch_size=5)
    assert "test_error" not in unsup and 100 / 3 - 1e-9 <= unsup["test_cluster_accuracy"] <= 100
    assert set(tiny().evaluate(x)) >= {"test_elbo"} and "test_error" not in tiny().evaluate(x)


def test_analysis_helpers():
    m = tiny(n_clusters=4)
    x = binary(7)
    z1, z2 = m.encode(x)
    assert z1.shape == (7, Z1) and z2.shape == (7, Z2)
    for y in (None, 3, torch.arange(7) % 4):
        images = m.generate(torch.randn(7, Z2), y)
        assert images.shape == (7, X_DIM) and ((images >= 0) & (images <= 1)).all()
    probs = m.classify(x)
    assert probs.shape == (7, 4)
    torch.testing.assert_close(probs.sum(-1), torch.ones(7))


# -------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("options,message", [
    ({"n_clusters": 1}, "n_clusters"), ({"n_clusters": -3}, "n_clusters"), ({"n_clusters": 2.5}, "n_clusters"),
    ({"hidden_z": (0, 8)}, "hidden_z"), ({"hidden": (16, -1)}, "hidden"), ({"z2_dim": 0}, "z2_dim"),
    ({"z_dim": 0}, "z_dim"), ({"classifier": "r"}, "classifier"), ({"n_classes": 1}, "n_classes"),
    ({"n_labelled": -5}, "n_labelled"), ({"n_train": 50, "n_labelled": 100}, "exceeds"),
    ({"warmup_epochs": -1}, "warmup_epochs"),
])
def test_bad_options_fail_clearly(options, message):
    with pytest.raises(ValueError, match=message):
        tiny(**options)


def test_bad_batches_fail_clearly():
    m = tiny().train()
    x = binary(4)
    with pytest.raises(ValueError, match="outside 0..2"):
        m.step({"x_u": x, "x_l": x, "y_l": torch.tensor([0, 1, 3, 0])}, 0)
    with pytest.raises(TypeError, match="integer class indices"):
        m.step({"x_u": x, "x_l": x, "y_l": torch.tensor([0.0, 1.0, 2.0, 0.0])}, 0)
    with pytest.raises(ValueError, match=r"\(batch, 5\)"):
        m.step({"x": torch.rand(4, 6)}, 0)
    with pytest.raises(KeyError, match="x_u"):
        m.step({"images": x}, 0)
    with pytest.raises(ValueError, match="unsupervised"):
        tiny(n_clusters=4).classification_losses(x, torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="n_train"):  # alpha needs the data sizes
        CaGeM(CaGeMConfig(x_dim=5, n_classes=3, hidden=(8,), hidden_z=(8,))).step(semi_batch(4, 3), 0)


# ------------------------------------------------------------------------------------- checkpoints and CLI
def test_checkpoint_round_trip(tmp_path):
    m = tiny(n_clusters=4, hidden=(16, 8), skip_x=False).train()
    m.step(semi_batch(), epoch=0)  # move the running averages
    m.eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, m)
    loaded = load_model(path, expect="cagem", device="cpu")
    assert loaded.config == m.config and not loaded.training
    x = binary(6)
    noise = {"z1": torch.randn(2, 6, Z1), "z2": torch.randn(2, 4, 6, Z2)}
    torch.testing.assert_close(loaded.unlabelled_bound(x, noise=noise).value, m.unlabelled_bound(x, noise=noise).value)


def test_cli_one_epoch_on_mnist(tmp_path, mnist_available):
    from dgmlab.cli import main

    out = tmp_path / "run"
    assert main(["train", "cagem", "--data", "mnist", "--labels", "100", "--epochs", "1", "--max-batches", "2",
                 "--n-test", "100", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    record = metrics["history"][0]
    assert metrics["config"]["x_dim"] == 784 and metrics["config"]["hidden"] == [1024, 1024]
    assert metrics["train_config"]["lr_decay_every"] == 50
    assert record["train_temperature"] == 0.0 and math.isfinite(record["test_elbo"])
    assert {"test_error", "test_error_q", "train_cross_entropy_p", "train_cross_entropy_q"} <= set(record)
