"""M2 (thesis eqs. 4.2-4.11) and the shared semi-supervised machinery (dgmlab.objectives.semisupervised)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal

from dgmlab.checkpoints import load_model, save_checkpoint
from dgmlab.data import balanced_subset, load_data, make_config
from dgmlab.models import get_model_class
from dgmlab.models.m2 import M2, M2Config
from dgmlab.objectives.semisupervised import alpha_weight, classification_loss, one_hot_classes, sum_over_classes


def tiny_m2(**kw) -> M2:
    torch.manual_seed(0)
    cfg = dict(x_dim=3, n_classes=4, likelihood="gaussian", hidden=(16,), z_dim=2, fixed_alpha=2.0)
    cfg.update(kw)
    return M2(M2Config(**cfg)).eval()  # eval mode: batch normalisation treats every point alone


# ------------------------------------------------------------------------------------------ the sum over classes
@pytest.mark.parametrize("analytic_kl", [True, False])
def test_batched_unlabelled_bound_equals_loop_over_classes(analytic_kl):
    m = tiny_m2(analytic_kl=analytic_kl)
    x = torch.randn(5, 3)
    S, K = 3, 4
    eps = torch.randn(S, K, 5, 2)
    batched = m.unlabelled_bound(x, noise={"z": eps}).value

    # brute force: one pass per class, written out term by term
    log_q_y = torch.log_softmax(m.q_y(x).logits, -1)
    total = -(log_q_y.exp() * log_q_y).sum(-1)  # entropy H[q(y|x)]
    for y in range(K):
        y_oh = F.one_hot(torch.full((5,), y), K).float()
        q_z = m.q_z(x, y_oh)
        mu, sd = q_z.base_dist.loc, q_z.base_dist.scale
        z = mu + sd * eps[:, y]
        log_px = m.p_x(z, y_oh).log_prob(x).mean(0)
        if analytic_kl:
            kl = (-torch.log(sd) + 0.5 * (sd**2 + mu**2) - 0.5).sum(-1)
        else:
            kl = (q_z.log_prob(z) - Normal(0.0, 1.0).log_prob(z).sum(-1)).mean(0)
        total = total + log_q_y[:, y].exp() * (log_px - kl - math.log(K))
    torch.testing.assert_close(batched, total, rtol=1e-5, atol=1e-5)


def test_unlabelled_bound_by_hand():
    """x in R^2, two classes, 1-d z, no hidden layers: every network is an affine map whose weights we set."""
    m = M2(M2Config(x_dim=2, n_classes=2, likelihood="gaussian", hidden=(), z_dim=1, fixed_alpha=1.0))
    W_y, b_y = [[0.5, -0.5], [-0.4, 0.6]], [0.1, -0.1]  # q(y|x) logits = W_y x + b_y
    w_mu, b_mu = [0.5, -0.3, 1.0, -1.0], 0.2  # q(z|x,y): mean over [x1, x2, y0, y1]
    w_lv, b_lv = [0.1, 0.2, -0.5, 0.3], -0.4  # q(z|x,y): log variance
    W_px, b_px = [[0.8, 0.5, -0.5], [-0.6, 0.2, 0.4]], [0.1, -0.2]  # p(x|y,z): mean over [z, y0, y1]
    W_pl, b_pl = [[0.3, 0.0, 0.1], [-0.2, 0.1, 0.0]], [0.0, -0.5]  # p(x|y,z): log variance
    with torch.no_grad():
        m.q_y.head.logits.weight.copy_(torch.tensor(W_y)), m.q_y.head.logits.bias.copy_(torch.tensor(b_y))
        m.q_z.head.mu.weight.copy_(torch.tensor([w_mu])), m.q_z.head.mu.bias.fill_(b_mu)
        m.q_z.head.scale.weight.copy_(torch.tensor([w_lv])), m.q_z.head.scale.bias.fill_(b_lv)
        m.p_x.head.mu.weight.copy_(torch.tensor(W_px)), m.p_x.head.mu.bias.copy_(torch.tensor(b_px))
        m.p_x.head.scale.weight.copy_(torch.tensor(W_pl)), m.p_x.head.scale.bias.copy_(torch.tensor(b_pl))

    xs = [[0.3, -1.2], [1.5, 0.4]]
    eps = [[0.7, -0.2], [-1.1, 0.4]]  # eps[y][point]
    dot = lambda w, v: sum(a * b for a, b in zip(w, v))  # noqa: E731
    expected = []
    for n, x in enumerate(xs):
        logits = [dot(W_y[k], x) + b_y[k] for k in range(2)]
        q = [math.exp(v) / sum(math.exp(u) for u in logits) for v in logits]
        u = -sum(qk * math.log(qk) for qk in q)  # entropy term
        for y in range(2):
            onehot = [1.0 if k == y else 0.0 for k in range(2)]
            mu = dot(w_mu, x + onehot) + b_mu
            lv = dot(w_lv, x + onehot) + b_lv
            z = mu + math.exp(0.5 * lv) * eps[y][n]
            log_px = 0.0
            for d in range(2):
                mx = dot(W_px[d], [z] + onehot) + b_px[d]
                lvx = dot(W_pl[d], [z] + onehot) + b_pl[d]
                log_px += -0.5 * (math.log(2 * math.pi) + lvx + (x[d] - mx) ** 2 / math.exp(lvx))
            kl = -0.5 * (1 + lv - mu**2 - math.exp(lv))
            u += q[y] * (log_px - kl + math.log(0.5))
        expected.append(u)

    noise = {"z": torch.tensor(eps).view(1, 2, 2, 1)}
    got = m.unlabelled_bound(torch.tensor(xs), noise=noise).value
    torch.testing.assert_close(got, torch.tensor(expected), rtol=1e-5, atol=1e-5)


def test_one_sample_labelled_bound_and_unlabelled_consistency():
    """With one sample, U(x) = sum_y q(y|x) ELBO_l(x, y) + H[q(y|x)] using the same z for each class."""
    m = tiny_m2(analytic_kl=False)
    x = torch.randn(6, 3)
    eps = torch.randn(1, 4, 6, 2)
    u = m.unlabelled_bound(x, noise={"z": eps})
    probs = m.classify(x)
    parts = torch.stack([m.labelled_bound(x, torch.full((6,), y), noise={"z": eps[:, y]}).value for y in range(4)], 1)
    entropy = -(probs * probs.log()).sum(-1)
    torch.testing.assert_close(u.value, (probs * parts).sum(-1) + entropy, rtol=1e-5, atol=1e-5)
    # terms add up to the value
    b = m.labelled_bound(x, torch.zeros(6, dtype=torch.long), noise={"z": eps[:, 0]})
    t = b.terms
    torch.testing.assert_close(b.value, t["log_px"] + t["log_py"] - t["kl_z"] - t["kl_a"] + t["entropy_y"])
    assert torch.allclose(t["log_py"], torch.tensor(-math.log(4)))


def test_sum_over_classes_shapes():
    probs = torch.softmax(torch.randn(2, 5, 3), -1)  # (S, B, K)
    f = torch.randn(2, 3, 5)  # (S, K, B)
    torch.testing.assert_close(sum_over_classes(probs, f), torch.einsum("sbk,skb->sb", probs, f))
    assert one_hot_classes(3, f).shape == (3, 1, 3)


def test_classification_loss_modes():
    log_p = torch.log_softmax(torch.randn(4, 6, 3), -1)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    marginal = classification_loss(log_p, y, "marginal")
    per_sample = classification_loss(log_p, y, "per_sample")
    assert torch.all(marginal <= per_sample + 1e-6)  # Jensen: -log mean p <= mean -log p
    one = log_p[:1]
    torch.testing.assert_close(classification_loss(one, y, "marginal"), classification_loss(one, y, "per_sample"))
    torch.testing.assert_close(per_sample, F.nll_loss(log_p.reshape(-1, 3), y.repeat(4), reduction="none")
                               .view(4, 6).mean(0))


# ------------------------------------------------------------------------------------------------ training step
def test_step_loss_follows_G9_weighting():
    m = tiny_m2()
    x_u, x_l, y_l = torch.randn(7, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(5)
    out = m.step({"x_u": x_u, "x_l": x_l, "y_l": y_l}, epoch=0)
    torch.manual_seed(5)
    lab = m.labelled_bound(x_l, y_l)
    unl = m.unlabelled_bound(x_u)
    ce = -torch.log_softmax(m.q_y(x_l).logits, -1).gather(1, y_l[:, None]).squeeze(1)
    expected = -((lab.value - 2.0 * ce).mean() + unl.value.mean())
    torch.testing.assert_close(out.loss, expected)
    assert {"labelled_bound", "unlabelled_bound", "cross_entropy", "labelled_error"} <= set(out.metrics)


def test_warmup_tempers_every_term_but_the_likelihood():
    m = tiny_m2(warmup_epochs=4)
    x_u, x_l, y_l = torch.randn(7, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 3])
    torch.manual_seed(1)
    out = m.step({"x_u": x_u, "x_l": x_l, "y_l": y_l}, epoch=1)  # temperature 1/4
    torch.manual_seed(1)
    lab, unl = m.labelled_bound(x_l, y_l), m.unlabelled_bound(x_u)
    ce = -torch.log_softmax(m.q_y(x_l).logits, -1).gather(1, y_l[:, None]).squeeze(1)
    temper = lambda b: b.terms["log_px"] + 0.25 * (b.value - b.terms["log_px"])  # noqa: E731
    torch.testing.assert_close(out.loss, -((temper(lab) - 2.0 * ce).mean() + temper(unl).mean()))
    assert out.metrics["temperature"] == 0.25


def test_training_improves_the_bound():
    m = tiny_m2()
    torch.manual_seed(0)
    x = torch.randn(64, 3) * torch.tensor([2.0, 0.5, 1.0]) + 1.0
    y = torch.randint(0, 4, (64,))
    batch = {"x_u": x, "x_l": x[:8], "y_l": y[:8]}
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    before = m.evaluate(x)["test_elbo"]
    for i in range(150):
        out = m.step(batch, i)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert m.evaluate(x)["test_elbo"] > before + 1.0


# ------------------------------------------------------------------------------------------- log-likelihood
def _quadrature_model():
    """x in R^2, two classes, 1-d z; q(z|x,y) = N(0, 2^2) covers the posterior, so importance sampling is accurate."""
    torch.manual_seed(3)
    m = M2(M2Config(x_dim=2, n_classes=2, likelihood="gaussian", hidden=(8,), z_dim=1, fixed_alpha=1.0,
                    analytic_kl=False)).double()
    with torch.no_grad():
        m.p_x.head.mu.weight.mul_(3.0)  # make x depend strongly on z, so the posterior is not the prior
        for p in m.q_z.head.parameters():
            p.zero_()
        m.q_z.head.scale.bias.fill_(math.log(4.0))
    return m.eval()  # per-point bounds: batch normalisation with its running averages


def test_importance_weighted_log_likelihood_matches_quadrature():
    """With a 1-d z, p(x) = sum_y p(y) int p(x|y,z) p(z) dz is a quadrature; L_k tends to it, bounds stay below."""
    m = _quadrature_model()
    x = torch.randn(4, 2, dtype=torch.float64)
    grid = torch.linspace(-9, 9, 6001, dtype=torch.float64)
    with torch.no_grad():
        zs = grid.view(-1, 1, 1, 1)  # (G, 1, 1, 1) against the class grid (K, 1, K) and x (B, 2)
        log_joint = (m.p_x(zs.expand(-1, 2, 4, 1), one_hot_classes(2, x)).log_prob(x)
                     + Normal(0.0, 1.0).log_prob(zs[..., 0]))  # (G, K, B)
        log_joint = torch.logsumexp(log_joint, 1) + math.log(0.5)  # sum over y, p(y) = 1/2
        exact = torch.logsumexp(log_joint, 0) + math.log(grid[1] - grid[0])
        torch.manual_seed(0)
        l_5000 = m.log_likelihood(x, k=5000, chunk=700)
        l_1 = torch.stack([m.log_likelihood(x, k=1) for _ in range(100)]).mean(0)
        elbo = torch.stack([m.unlabelled_bound(x).value for _ in range(100)]).mean(0)
    torch.testing.assert_close(l_5000, exact, atol=0.03, rtol=0)
    assert torch.all(elbo < exact) and torch.all(l_1 < exact)
    assert torch.all(l_5000 > l_1)


def test_one_importance_sample_is_at_least_the_unlabelled_bound():
    """For the same z draws, log sum_y p(x,y,z_y)/q(z_y|x,y) >= sum_y q(y|x)[f_y - log q(y|x)] = U(x) (Jensen over
    y): with y summed exactly, L_1 is the bound U(x) with q(y|x) replaced by the best possible class weights."""
    m = _quadrature_model()
    x = torch.randn(6, 2, dtype=torch.float64)
    with torch.no_grad():
        for seed in range(20):
            torch.manual_seed(seed)
            l_1 = m.log_likelihood(x, k=1)
            torch.manual_seed(seed)  # the same z ~ q(z|x,y) for every class
            u = m.unlabelled_bound(x).value
            assert torch.all(u <= l_1 + 1e-9)


# ----------------------------------------------------------------------------------------------- bad inputs
def test_bad_labels_and_inputs_give_clear_errors():
    m = tiny_m2()
    x = torch.randn(4, 3)
    with pytest.raises(TypeError, match="integer class indices"):
        m.labelled_bound(x, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="outside 0..3"):
        m.labelled_bound(x, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="one integer label per input"):
        m.labelled_bound(x, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"shape \(batch, 3\)"):
        m.unlabelled_bound(torch.randn(4, 5))
    with pytest.raises(TypeError, match="floating-point"):
        m.classify(torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(KeyError, match="x_u, x_l, y_l"):
        m.step({"x": x}, 0)
    with pytest.raises(ValueError, match="exceeds n_train"):
        M2Config(x_dim=3, n_classes=2, n_train=10, n_labelled=20)
    with pytest.raises(ValueError, match="n_train and n_labelled"):
        _ = M2Config(x_dim=3, n_classes=2).alpha


def test_labelled_subsets_are_checked_on_the_data_side():
    y = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2])
    with pytest.raises(ValueError, match="class 3 has only 0 points"):
        balanced_subset(y, 8, 4, seed=0)  # a class missing from the data
    with pytest.raises(ValueError, match="holds only 8 points"):
        balanced_subset(y, 12, 4, seed=0)  # more labels than points
    with pytest.raises(ValueError, match="spread evenly"):
        balanced_subset(y, 5, 3, seed=0)
    with pytest.raises(ValueError, match="labels 6"):
        load_data("halfmoons", labels=10)


def test_alpha_from_the_data():
    assert alpha_weight(0.1, 60000, 100) == pytest.approx(60.0)  # reproduction notes rn-adgm: MNIST alpha = 60
    data = load_data("halfmoons", labels=6)
    cfg = make_config(M2Config, data, hidden=(8,), z_dim=2)
    assert (cfg.x_dim, cfg.n_classes, cfg.likelihood, cfg.n_labelled) == (2, 2, "gaussian", 6)
    assert cfg.alpha == pytest.approx(0.1 * 10000 / 6)


# ------------------------------------------------------------------------------------------ registry, devices
def test_registry_and_checkpoint_roundtrip(tmp_path):
    assert get_model_class("m2") is M2 and M2.setting == "semi-supervised"
    m = tiny_m2()
    save_checkpoint(tmp_path / "m2.pt", m)
    back = load_model(tmp_path / "m2.pt", expect="m2", device="cpu")
    x = torch.randn(5, 3)
    torch.testing.assert_close(back.classify(x), m.classify(x))
    z, y = m.encode_style(x)
    assert z.shape == (5, 2) and y.shape == (5,)
    assert m.generate(z, y).shape == (5, 3)
    assert m.kl_per_unit(x)["z"].shape == (2,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    m = tiny_m2().to("cuda")
    x, y = torch.randn(5, 3, device="cuda"), torch.tensor([0, 1, 2, 3, 0], device="cuda")
    out = m.step({"x_u": x, "x_l": x, "y_l": y}, 0)
    out.loss.backward()
    assert out.loss.device.type == "cuda"
    assert m.log_likelihood(x, k=10).device.type == "cuda"
    assert m.evaluate(x, y)["test_error"] >= 0


# --------------------------------------------------------------------------------------------------- M1 + M2
def tiny_m1m2(**kw):
    from dgmlab.models.m1m2 import M1M2, M1M2Config

    torch.manual_seed(0)
    cfg = dict(x_dim=6, n_classes=3, hidden=(8,), z_dim=2, m1_hidden=(8,), m1_z_dim=3, m1_epochs=2, fixed_alpha=1.0)
    cfg.update(kw)
    return M1M2(M1M2Config(**cfg)).eval()


def test_m1m2_trains_the_two_stages_in_sequence():
    m = tiny_m1m2()
    assert get_model_class("m1m2") is type(m) and type(m).setting == "semi-supervised"
    x, y = torch.rand(5, 6).bernoulli(), torch.tensor([0, 1, 2, 0, 1])
    batch = {"x_u": x, "x_l": x, "y_l": y}
    for epoch, trained, frozen in [(0, m.m1, m.m2), (2, m.m2, m.m1)]:
        m.zero_grad(set_to_none=True)
        out = m.step(batch, epoch)
        out.loss.backward()
        assert out.metrics["stage"] == (1.0 if epoch < 2 else 2.0)
        assert all(p.grad is None for p in frozen.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.parameters())


def test_m1m2_stacked_bound_is_below_its_importance_weighted_estimate():
    m = tiny_m1m2().double()
    x = torch.rand(30, 6, dtype=torch.float64).bernoulli()
    torch.manual_seed(0)
    with torch.no_grad():
        bound = torch.stack([m.unlabelled_bound(x).value for _ in range(10)]).mean()
        l_300 = m.log_likelihood(x, k=300, chunk=100).mean()
    assert bound < l_300
    probs = m.classify(x[:4], samples=3)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4, dtype=torch.float64))
    ev = m.evaluate(x, torch.zeros(30, dtype=torch.long))
    assert {"test_error", "test_elbo", "test_recon", "test_m2_bound"} <= set(ev)
