"""The labs: the generator (labs/make_labs.py), the checks (labs/labcheck.py) and the generated notebooks.

* generation writes both versions, is idempotent and ``--check`` notices stale or malformed files;
* every solution notebook runs top to bottom without error under ``DGMLAB_FAST=1``, and every check passes;
* every student notebook, run with errors allowed, fails every check cell with "not implemented yet" and its hint;
* the checks reject typical wrong answers with a teaching message (called directly, no kernel);
* ``--grade`` restores tampered check cells and reports PASS / FAIL / MISSING per exercise.

The notebook tests execute real kernels (nbclient, kernel ``python3``); MNIST must be reachable through DGMLAB_DATA.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Bernoulli, Categorical, Normal, kl_divergence

ROOT = Path(__file__).resolve().parents[1]
LABS = ROOT / "labs"
sys.path.insert(0, str(LABS))

import labcheck  # noqa: E402
import make_labs  # noqa: E402

LAB_NAMES = sorted(p.stem for p in (LABS / "src").glob("*.ipynb"))
FAST_ENV = {"DGMLAB_FAST": "1", "OMP_NUM_THREADS": "1"}


def test_three_labs_exist():
    assert {"lab01_backprop", "lab02_vae", "lab03_m2"} <= set(LAB_NAMES)


# ----------------------------------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def generated():
    """Run the generator as the Makefile does; return the two folders."""
    run = subprocess.run([sys.executable, str(LABS / "make_labs.py")], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    return make_labs.OUT_DIRS


def test_generation_is_idempotent(generated):
    files = sorted(p for d in generated.values() for p in d.iterdir())
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    run = subprocess.run([sys.executable, str(LABS / "make_labs.py")], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0 and "wrote" not in run.stdout, run.stdout
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == before
    check = subprocess.run([sys.executable, str(LABS / "make_labs.py"), "--check"], capture_output=True, text=True,
                           cwd=ROOT)
    assert check.returncode == 0, check.stdout + check.stderr


def test_generated_files(generated):
    for name in LAB_NAMES:
        lab = make_labs.read_lab(LABS / "src" / f"{name}.ipynb")
        n_blocks = sum(sum(isinstance(p, make_labs.Block) for p in make_labs.split_blocks(c["source"], name))
                       for c in lab.nb["cells"] if c["cell_type"] == "code")
        assert n_blocks >= 4
        for version, folder in generated.items():
            assert (folder / "labcheck.py").read_text() == (LABS / "labcheck.py").read_text()
            nb = nbformat.read(folder / f"{name}.ipynb", as_version=4)
            nbformat.validate(nb)
            assert nb.metadata.kernelspec.name == "python3"
            assert nb.metadata.dgmlab == {"lab": name, "version": version}
            code = [c for c in nb.cells if c.cell_type == "code"]
            assert all(not c.outputs and c.execution_count is None for c in code)
            text = "\n".join(c.source for c in code)
            assert "### BEGIN SOLUTION" not in text and "### END SOLUTION" not in text and "### HINT" not in text
            stubs = text.count("raise NotImplementedError(")
            assert stubs == (n_blocks if version == "student" else 0), (version, name, stubs)
            checks = [make_labs.cell_check_id(c) for c in code if make_labs.cell_check_id(c)]
            assert checks == [cid for cid, _ in lab.checks]
            if version == "student":
                check_cells = [c for c in code if "check" in c.metadata.get("tags", [])]
                assert check_cells and all(c.metadata.get("editable") is False for c in check_cells)


def test_check_mode_reports_stale_and_missing_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(make_labs, "OUT_DIRS", {"student": tmp_path / "student", "solution": tmp_path / "solution"})
    assert make_labs.generate(["lab01_backprop"], check=True) > 0
    assert "missing" in capsys.readouterr().out
    assert make_labs.generate(["lab01_backprop"]) == 0
    assert make_labs.generate(["lab01_backprop"], check=True) == 0
    target = tmp_path / "student" / "lab01_backprop.ipynb"
    target.write_text(target.read_text().replace("check_forward", "check_forward "))
    assert make_labs.generate(["lab01_backprop"], check=True) == 1
    assert "out of date" in capsys.readouterr().out


def test_student_stub_keeps_indentation_and_hint():
    parts = make_labs.split_blocks(
        "def f(x):\n    ### BEGIN SOLUTION\n    ### HINT: double \"it\"\n    y = 2 * x\n    ### END SOLUTION\n"
        "    return y", "test")
    student = make_labs.render_source(parts, "student")
    assert student == 'def f(x):\n    raise NotImplementedError("double \\"it\\"")\n    return y'
    assert make_labs.render_source(parts, "solution") == "def f(x):\n    y = 2 * x\n    return y"
    namespace = {}
    exec(student, namespace)
    with pytest.raises(NotImplementedError, match='double "it"'):
        namespace["f"](1)


@pytest.mark.parametrize("source, problem", [
    ("### BEGIN SOLUTION\nx = 1\n", "not closed"),
    ("x = 1\n### END SOLUTION\n", "without a matching"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n", "inside another"),
    ("### HINT: stray\n", "outside a solution block"),
])
def test_malformed_markers_are_reported(source, problem):
    with pytest.raises(make_labs.LabFormatError, match=problem):
        make_labs.split_blocks(source, "cell 3")


def test_exercise_without_check_is_rejected(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"),
        nbformat.v4.new_code_cell("### CHECK 1: f\nassert f() == 1"),
        nbformat.v4.new_code_cell("def g():\n    ### BEGIN SOLUTION\n    return 2\n    ### END SOLUTION"),
    ])
    path = tmp_path / "labX.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(make_labs.LabFormatError, match="not followed by a check cell"):
        make_labs.read_lab(path)


# ----------------------------------------------------------------------------------------------------------------------
# Executing the generated notebooks (FAST mode)
# ----------------------------------------------------------------------------------------------------------------------

def _execute(folder: Path, name: str, allow_errors: bool):
    nb = nbformat.read(folder / f"{name}.ipynb", as_version=4)
    return make_labs.execute_notebook(nb, folder, allow_errors=allow_errors, timeout=300, env=FAST_ENV)


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


@pytest.mark.parametrize("name", LAB_NAMES)
def test_solution_notebook_runs(generated, name):
    executed = _execute(generated["solution"], name, allow_errors=False)  # raises CellExecutionError on any error
    checks = [c for c in executed.cells if make_labs.cell_check_id(c)]
    assert checks
    for cell in checks:
        assert "\u2714 Exercise" in _stdout(cell), cell.source


def _hints_before(cells, index) -> list[str]:
    """The hints of the nearest exercise cell above cell ``index`` of a source notebook."""
    for cell in reversed(cells[:index]):
        if cell.cell_type == "code" and not make_labs.check_id(cell.source):
            blocks = [p for p in make_labs.split_blocks(cell.source, "") if isinstance(p, make_labs.Block)]
            if blocks:
                return [b.hint for b in blocks]
    raise AssertionError("a check cell without an exercise above it")


@pytest.mark.parametrize("name", LAB_NAMES)
def test_student_notebook_fails_every_check_with_its_hint(generated, name):
    src = nbformat.read(LABS / "src" / f"{name}.ipynb", as_version=4)
    executed = _execute(generated["student"], name, allow_errors=True)
    assert len(executed.cells) == len(src.cells)
    n_checks, stub_errors = 0, 0
    for i, cell in enumerate(executed.cells):
        if cell.cell_type != "code":
            continue
        error = make_labs.error_of(cell)
        if make_labs.cell_check_id(cell):
            n_checks += 1
            assert error is not None, f"check cell {i} passed although the exercise is a stub"
            ename, evalue = error
            assert ename == "AssertionError", (i, ename, evalue)
            assert "not implemented yet" in evalue and "Hint: " in evalue, evalue
            assert any(hint in evalue for hint in _hints_before(src.cells, i)), evalue
        elif "exercise" in cell.metadata.get("tags", []):
            assert "raise NotImplementedError(" in cell.source
            assert error is None, f"exercise cell {i} should only define functions, got {error}"
        elif error is not None:
            stub_errors += error[0] == "NotImplementedError"  # a demo cell that calls a stub directly
    assert n_checks == len(make_labs.read_lab(LABS / "src" / f"{name}.ipynb").checks)
    assert stub_errors > 0, "the stubs should raise NotImplementedError when called outside a check"


# ----------------------------------------------------------------------------------------------------------------------
# The checks catch wrong answers (direct calls, no kernel)
# ----------------------------------------------------------------------------------------------------------------------

def _fails(check, *args, match: str, **kwargs):
    with pytest.raises(AssertionError, match=match) as info:
        check(*args, **kwargs)
    return str(info.value)


def _stub(*args, **kwargs):
    raise NotImplementedError("think about the chain rule")


def test_stub_message_names_exercise_and_hint():
    msg = _fails(labcheck.check_forward, _stub, match="not implemented yet")
    assert msg.startswith("Exercise 1a is not implemented yet") and "Hint: think about the chain rule" in msg

    def train(**kwargs):  # calls an unfinished helper
        return _stub()

    msg = _fails(labcheck.check_training, train, np.zeros((2, 2)), np.zeros(2), match="not implemented yet")
    assert "`train` calls `_stub`" in msg and "think about the chain rule" in msg


# Lab 1 ---------------------------------------------------------------------------------------------------------------

def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _forward(params, X, act=np.tanh):
    h = act(X @ params["W1"] + params["b1"])
    p = _sigmoid((h @ params["W2"] + params["b2"])[:, 0])
    return p, {"X": X, "h": h, "p": p}


def _backward(params, cache, y, tanh_prime=True, mean=True):
    X, h, p = cache["X"], cache["h"], cache["p"]
    d2 = ((p - y) / (len(y) if mean else 1))[:, None]
    d1 = (d2 @ params["W2"].T) * ((1 - h ** 2) if tanh_prime else 1)
    return {"W1": X.T @ d1, "b1": d1.sum(0), "W2": h.T @ d2, "b2": d2.sum(0)}


def test_lab1_checks_accept_correct_answers(capsys):
    labcheck.check_forward(_forward)
    labcheck.check_backward(_backward)
    labcheck.check_bce_loss(lambda p, y: -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert capsys.readouterr().out.count("\u2714") == 3


def test_lab1_checks_reject_wrong_answers():
    _fails(labcheck.check_forward, lambda P, X: _forward(P, X, act=lambda a: np.maximum(a, 0)),
           match="uses ReLU; .* uses tanh")
    msg = _fails(labcheck.check_backward, lambda P, c, y: _backward(P, c, y, tanh_prime=False),
                 match="finite-difference estimate")
    assert "forget the derivative of tanh, 1 - tanh(a)^2" in msg and "relative" in msg
    _fails(labcheck.check_backward, lambda P, c, y: _backward(P, c, y, mean=False), match="N times too large")
    _fails(labcheck.check_backward, lambda P, c, y: {**_backward(P, c, y), "W1": _backward(P, c, y)["W1"].T},
           match=r"grads\['W1'\] has shape")
    _fails(labcheck.check_bce_loss, lambda p, y: -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)),
           match="you summed over the points")


def _numerical_gradient(f, theta, eps, central=True, restore=True):
    grad = np.zeros_like(theta)
    for idx in np.ndindex(theta.shape):
        old = theta[idx]
        theta[idx] = old + eps
        fp = f(theta)
        theta[idx] = old - eps if central else old
        fm = f(theta)
        if restore:
            theta[idx] = old
        grad[idx] = (fp - fm) / (2 * eps if central else eps)
    return grad


def test_lab1_gradient_check_checks():
    labcheck.check_numerical_gradient(_numerical_gradient)
    _fails(labcheck.check_numerical_gradient, lambda f, t, e: _numerical_gradient(f, t, e, central=False),
           match="one-sided differences")
    _fails(labcheck.check_numerical_gradient, lambda f, t, e: _numerical_gradient(f, t, e, restore=False),
           match="restore every entry")


def test_lab1_autograd_and_softmax_checks():
    def autograd_gradients(params, X, y, dtype=torch.float64, reduction="mean"):
        P = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in params.items()}
        h = torch.tanh(torch.as_tensor(X, dtype=dtype) @ P["W1"] + P["b1"])
        a = (h @ P["W2"] + P["b2"])[:, 0]
        F.binary_cross_entropy_with_logits(a, torch.as_tensor(y, dtype=dtype), reduction=reduction).backward()
        return {k: v.grad for k, v in P.items()}

    labcheck.check_autograd_gradients(autograd_gradients)
    _fails(labcheck.check_autograd_gradients, lambda *a: autograd_gradients(*a, reduction="sum"),
           match="N times too large")
    _fails(labcheck.check_softmax, lambda a: np.exp(a) / np.exp(a).sum(-1, keepdims=True),
           match="Subtract the row maximum")
    _fails(labcheck.check_softmax, lambda a: np.exp(a - a.max()) / np.exp(a - a.max()).sum(0, keepdims=True),
           match="wrong axis")

    def sce(a, y, scale=1.0):
        probs = np.exp(a - a.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        return -np.mean(np.log(probs[np.arange(len(y)), y])), scale * (probs - np.eye(a.shape[1])[y]) / len(y)

    labcheck.check_softmax_cross_entropy(sce)
    _fails(labcheck.check_softmax_cross_entropy, lambda a, y: sce(a, y, scale=-1.0), match="wrong sign")


# Lab 2 ---------------------------------------------------------------------------------------------------------------

def _sample(mu, log_var, eps=None):
    return mu + (0.5 * log_var).exp() * (torch.randn_like(mu) if eps is None else eps)


def _kl(mu, log_var):
    return 0.5 * (mu ** 2 + log_var.exp() - log_var - 1).sum(-1)


def _loglik(logits, x):
    return Bernoulli(logits=logits).log_prob(x).sum(-1)


def _vae_loss(model, x, sign=1.0, sampler=_sample):
    mu, log_var = model.encode(x)
    z = sampler(mu, log_var)
    return sign * (-(_loglik(model.decode(z), x) - _kl(mu, log_var))).mean()


def test_lab2_checks_accept_correct_answers():
    labcheck.check_reparameterised_sample(_sample)
    labcheck.check_gaussian_kl(_kl)
    labcheck.check_bernoulli_log_likelihood(_loglik)
    labcheck.check_vae_loss(_vae_loss)


def test_lab2_checks_reject_wrong_answers():
    _fails(labcheck.check_reparameterised_sample,
           lambda mu, lv, eps=None: mu + lv.exp() * (torch.randn_like(mu) if eps is None else eps),
           match=r"exp\(log_var\) = sigma\^2 as the standard deviation")

    def not_reparameterised(mu, log_var, eps=None):
        if eps is not None:
            return _sample(mu, log_var, eps)
        return Normal(mu, (0.5 * log_var).exp()).sample()

    _fails(labcheck.check_reparameterised_sample, not_reparameterised, match="reparameterisation trick")
    _fails(labcheck.check_gaussian_kl, lambda mu, lv: 0.5 * (mu ** 2 + lv.exp() - lv).sum(-1), match="forget the -1")
    _fails(labcheck.check_gaussian_kl, lambda mu, lv: 0.5 * (mu ** 2 + lv.exp() - lv - 1), match="sum over the last")
    _fails(labcheck.check_bernoulli_log_likelihood,
           lambda a, x: (x * torch.sigmoid(a).log() + (1 - x) * (1 - torch.sigmoid(a)).log()).sum(-1),
           match="underflows")
    _fails(labcheck.check_vae_loss, lambda m, x: _vae_loss(m, x, sign=-1.0), match="MINIMISES")
    _fails(labcheck.check_vae_loss,
           lambda m, x: _vae_loss(m, x, sampler=lambda mu, lv: Normal(mu, (0.5 * lv).exp()).sample()),
           match="sends no gradient to the encoder")


# Lab 3 ---------------------------------------------------------------------------------------------------------------

def _labelled(model, x, y, log_py=True):
    mu, log_var = model.encode(x, y)
    q_z = Normal(mu, (0.5 * log_var).exp())
    z = q_z.rsample()
    kl = kl_divergence(q_z, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    bound = Bernoulli(logits=model.decode(z, y)).log_prob(x).sum(-1) - kl
    return bound - math.log(model.n_classes) if log_py else bound


def _unlabelled(model, x, entropy=True, swap_axes=False):
    k, b = model.n_classes, len(x)
    q = Categorical(logits=model.classify(x))
    y = F.one_hot(torch.arange(k).repeat_interleave(b), k).to(x.dtype)
    elbo = _labelled(model, x.repeat(k, 1), y)
    elbo = elbo.view(b, k) if swap_axes else elbo.view(k, b).t()
    return (q.probs * elbo).sum(-1) + (q.entropy() if entropy else 0)


def _unlabelled_loop(model, x):
    q = Categorical(logits=model.classify(x))
    elbo = torch.stack([_labelled(model, x, F.one_hot(torch.full((len(x),), c), model.n_classes).to(x.dtype))
                        for c in range(model.n_classes)], -1)
    return (q.probs * elbo).sum(-1) + q.entropy()


def _m2_loss(model, x_l, y_l, x_u, alpha, ce_sign=1.0):
    j = _labelled(model, x_l, F.one_hot(y_l, model.n_classes).to(x_l.dtype))
    ce = F.cross_entropy(model.classify(x_l), y_l)
    return -(j.mean() - ce_sign * alpha * ce + _unlabelled(model, x_u).mean())


def test_lab3_checks_accept_correct_answers():
    labcheck.check_labelled_bound(_labelled)
    labcheck.check_unlabelled_bound(_unlabelled)
    assert labcheck.check_hand_computed_case(_unlabelled) == pytest.approx(-1.5 * math.log(2))
    labcheck.check_m2_loss(_m2_loss)
    labcheck.check_alpha(lambda beta, n, n_l: beta * n / n_l)


def test_lab3_checks_reject_wrong_answers():
    _fails(labcheck.check_labelled_bound, lambda m, x, y: _labelled(m, x, y, log_py=False),
           match=r"log p\(y\) term is missing")
    _fails(labcheck.check_unlabelled_bound, lambda m, x: _unlabelled(m, x, entropy=False), match="entropy term")
    _fails(labcheck.check_unlabelled_bound, lambda m, x: _unlabelled(m, x, swap_axes=True), match="mixed up")
    msg = _fails(labcheck.check_unlabelled_bound, _unlabelled_loop, match="encoder ran 3 times")
    assert "ONE batched operation" in msg
    _fails(labcheck.check_hand_computed_case, lambda m, x: _unlabelled(m, x, entropy=False), match=r"-1.5 log 2")
    _fails(labcheck.check_m2_loss, lambda *a: _m2_loss(*a, ce_sign=-1.0), match="wrong sign")
    _fails(labcheck.check_alpha, lambda beta, n, n_l: beta * (n - n_l) / n_l, match="all N training points")


# Lab 4 ---------------------------------------------------------------------------------------------------------------

def _merge(mu_q, var_q, mu_p, var_p):
    var = 1 / (1 / var_q + 1 / var_p)
    return (mu_q / var_q + mu_p / var_p) * var, var


def _temperature(epoch, warmup_epochs):
    return 1.0 if warmup_epochs == 0 else min(1.0, epoch / warmup_epochs)


def _schedule(n_epochs, steps_per_epoch, warmup_epochs, per_batch=False):
    if per_batch:  # the temperature advances with every gradient step
        return [_temperature(step, warmup_epochs) for step in range(n_epochs * steps_per_epoch)]
    return [_temperature(epoch, warmup_epochs) for epoch in range(n_epochs) for _ in range(steps_per_epoch)]


def _warmup_loss(log_px, kl_layers, t, on="kl"):
    kl = sum(kl_layers)
    if on == "recon":
        return -(t * log_px - kl).mean()
    if on == "all":
        return -t * (log_px - kl).mean()
    return -(log_px - t * kl).mean()


def _top_down(model, x, eps=None, parent="sample"):
    (mu_hat1, var_hat1), (mu_hat2, var_hat2) = model.bottom_up(x)
    eps1, eps2 = (torch.randn_like(mu_hat1), torch.randn_like(mu_hat2)) if eps is None else eps
    z2 = mu_hat2 + var_hat2.sqrt() * eps2
    at = {"sample": z2, "bottom-up mean": mu_hat2, "fresh prior sample": torch.randn_like(mu_hat2)}[parent]
    mu_p1, var_p1 = model.prior_z1(at)
    mu_q1, var_q1 = _merge(mu_hat1, var_hat1, mu_p1, var_p1)
    z1 = mu_q1 + var_q1.sqrt() * eps1
    kl1 = kl_divergence(Normal(mu_q1, var_q1.sqrt()), Normal(mu_p1, var_p1.sqrt())).sum(-1)
    kl2 = kl_divergence(Normal(mu_hat2, var_hat2.sqrt()), Normal(torch.zeros_like(mu_hat2), 1.0)).sum(-1)
    return {"z1": z1, "z2": z2, "q1": (mu_q1, var_q1), "p1": (mu_p1, var_p1), "q2": (mu_hat2, var_hat2),
            "kl1": kl1, "kl2": kl2}


def test_lab4_is_generated(generated):
    assert "lab04_lvae" in LAB_NAMES
    lab = make_labs.read_lab(LABS / "src" / "lab04_lvae.ipynb")
    assert [cid for cid, _ in lab.checks] == ["4a", "4b", "4b-run", "4c", "4d"]
    assert all((folder / "lab04_lvae.ipynb").exists() for folder in generated.values())


def test_lab4_checks_accept_correct_answers(capsys):
    labcheck.check_precision_weighted_merge(_merge)
    labcheck.check_temperature(_temperature)
    labcheck.check_temperature_schedule(_schedule)
    labcheck.check_warmup_loss(_warmup_loss)
    labcheck.check_top_down(_top_down)
    assert capsys.readouterr().out.count("\u2714") == 5


def test_lab4_merge_check_rejects_wrong_answers():
    check = labcheck.check_precision_weighted_merge
    _fails(check, lambda mq, vq, mp, vp: ((mq / vq + mp / vp) * (vq + vp), vq + vp), match="added the variances")
    _fails(check, lambda mq, vq, mp, vp: ((mq + mp) / 2, _merge(mq, vq, mp, vp)[1]), match="equal weights")
    _fails(check, lambda mq, vq, mp, vp: ((mq / vp + mp / vq) * _merge(mq, vq, mp, vp)[1], _merge(mq, vq, mp, vp)[1]),
           match="weights are swapped")
    _fails(check, lambda *a: (_merge(*a)[0], _merge(*a)[1].sqrt()), match="returned the standard deviation")
    _fails(check, lambda *a: (_merge(*a)[0], _merge(*a)[1].log()), match="returned the log-variance")
    _fails(check, lambda mq, vq, mp, vp: (_merge(mq, vq, mp, vp)[0], 1 / (1 / vq ** 2 + 1 / vp ** 2)),
           match="already variances")


def test_lab4_warmup_checks_reject_wrong_answers():
    _fails(labcheck.check_temperature_schedule, lambda *a: _schedule(*a, per_batch=True), match="advanced per batch")
    _fails(labcheck.check_temperature, lambda e, n: 1.0 if n == 0 else min(1.0, (e + 1) / n),
           match="off by one: epochs count from 0")
    _fails(labcheck.check_temperature, lambda e, n: 1.0 if n == 0 else min(1.0, e / (n - 1) if n > 1 else 1.0),
           match="one epoch too early")
    _fails(labcheck.check_temperature, lambda e, n: 1.0 if n == 0 else e / n, match="clamp it at 1")
    _fails(labcheck.check_temperature, lambda e, n: min(1.0, e / n), match="warm-up is switched off")
    _fails(labcheck.check_warmup_loss, lambda lp, kls, t: _warmup_loss(lp, kls, t, on="recon"),
           match="multiplies the reconstruction term log p")
    _fails(labcheck.check_warmup_loss, lambda lp, kls, t: _warmup_loss(lp, kls, t, on="all"), match="the whole loss")


def test_lab4_top_down_check_rejects_wrong_parent():
    _fails(labcheck.check_top_down, lambda m, x, eps=None: _top_down(m, x, eps, parent="bottom-up mean"),
           match="wrong parent: the prior p\\(z1\\|z2\\) was computed at the bottom-up mean")
    _fails(labcheck.check_top_down, lambda m, x, eps=None: _top_down(m, x, eps, parent="fresh prior sample"),
           match="wrong parent: .* fresh draw from p\\(z2\\)")


# Lab 6 ---------------------------------------------------------------------------------------------------------------

def _flag(scores, threshold):
    return np.asarray(scores) < threshold


def _alarm_rates(scores, is_unseen, threshold, mistake=None):
    flagged = _flag(scores, threshold)
    fa, miss = int((flagged & ~is_unseen).sum()), int((~flagged & is_unseen).sum())
    far, mr = fa / (~is_unseen).sum(), miss / is_unseen.sum()
    if mistake == "all minutes":
        far, mr = fa / len(scores), miss / len(scores)
    elif mistake == "swapped":
        fa, miss, far, mr = miss, fa, mr, far
    elif mistake == "counts":
        far, mr = fa, miss
    elif mistake == "hit rate":
        mr = 1 - mr
    return {"false_alarms": fa, "false_alarm_rate": far, "misses": miss, "miss_rate": mr}


def _pairwise_auc(seen, unseen, tie=0.5):
    u, s = np.asarray(unseen)[:, None], np.asarray(seen)[None, :]
    return float(((u < s).sum() + tie * (u == s).sum()) / (u.size * s.size))


def test_lab6_is_generated(generated):
    assert "lab06_anomaly" in LAB_NAMES
    lab = make_labs.read_lab(LABS / "src" / "lab06_anomaly.ipynb")
    assert [cid for cid, _ in lab.checks] == ["6a", "6b", "6c", "6d"]
    assert all((folder / "lab06_anomaly.ipynb").exists() for folder in generated.values())


def test_lab6_checks_accept_correct_answers(capsys):
    labcheck.check_flag(_flag)
    labcheck.check_false_alarms_and_misses(_alarm_rates)
    labcheck.check_threshold_from_training(lambda s, q: np.quantile(s, q))
    labcheck.check_roc_auc(_pairwise_auc)
    # other usual ways to write a quantile (interpolations, an order statistic, torch) pass as well
    labcheck.check_threshold_from_training(lambda s, q: np.percentile(s, 100 * q, method="lower"))
    labcheck.check_threshold_from_training(lambda s, q: np.sort(s)[int(q * len(s))])
    labcheck.check_threshold_from_training(lambda s, q: torch.quantile(torch.as_tensor(s), q))
    assert capsys.readouterr().out.count("\u2714") == 7


def test_lab6_flag_check_rejects_wrong_answers():
    _fails(labcheck.check_flag, lambda s, t: s > t, match="inequality is reversed")
    _fails(labcheck.check_flag, lambda s, t: s >= t, match="inequality is reversed")
    _fails(labcheck.check_flag, lambda s, t: s <= t, match="EQUALS the threshold are flagged")
    _fails(labcheck.check_flag, lambda s, t: np.flatnonzero(s < t), match="positions \\(indices\\)")
    _fails(labcheck.check_flag, lambda s, t: np.where(s < t), match="returned a tuple")
    _fails(labcheck.check_flag, lambda s, t: (s < t).astype(int), match="return booleans")


def test_lab6_rates_check_rejects_wrong_answers():
    check = labcheck.check_false_alarms_and_misses
    _fails(check, lambda *a: _alarm_rates(*a, mistake="all minutes"), match="divided by ALL 42 minutes")
    _fails(check, lambda *a: _alarm_rates(*a, mistake="swapped"), match="false alarms and misses are swapped")
    _fails(check, lambda *a: _alarm_rates(*a, mistake="counts"), match="is a count .*, not a rate")
    _fails(check, lambda *a: _alarm_rates(*a, mistake="hit rate"), match="miss_rate is the HIT rate")
    _fails(check, lambda s, u, t: _alarm_rates(s, ~u, t), match="seen and unseen are mixed up")


def test_lab6_threshold_check_rejects_wrong_answers():
    check = labcheck.check_threshold_from_training
    namespace = {"np": np, "score_test": np.linspace(-50.0, 0.0, 300)}
    exec("def leaky(train_scores, q):\n    return np.quantile(score_test, q)\n", namespace)
    _fails(check, namespace["leaky"], match="`score_test`, which looks like the scores of the test minutes")
    other = np.linspace(-30.0, 0.0, 100)  # any array other than the argument
    _fails(check, lambda s, q: np.quantile(other, q), match="ignores its argument")
    _fails(check, lambda s, q: np.quantile(s, 1 - q), match="\\(1 - q\\)-quantile")
    _fails(check, lambda s, q: np.quantile(-s, 1 - q), match="you worked with -U\\(x\\), the loss")
    _fails(check, lambda s, q: np.quantile(-s, q), match="you worked with -U\\(x\\), the loss")
    _fails(check, lambda s, q: np.percentile(s, q), match="np.percentile takes a percentage")
    _fails(check, lambda s, q: (s.sort(), s[int(q * len(s))])[1], match="sorted it in place")


def test_lab6_auc_check_rejects_wrong_answers():
    check = labcheck.check_roc_auc
    _fails(check, lambda seen, unseen: 1 - _pairwise_auc(seen, unseen), match="the AUC is flipped")
    _fails(check, lambda seen, unseen: _pairwise_auc(unseen, seen), match="the AUC is flipped")
    _fails(check, lambda seen, unseen: _pairwise_auc(seen, unseen, tie=0.0), match="ties are ignored")
    _fails(check, lambda seen, unseen: _pairwise_auc(seen, unseen, tie=1.0), match="ties count as a full win")
    _fails(check, lambda seen, unseen: _pairwise_auc(seen, unseen) * len(seen) * len(unseen),
           match="the NUMBER of pairs")


# ----------------------------------------------------------------------------------------------------------------------
# Grading
# ----------------------------------------------------------------------------------------------------------------------

def test_grading_restores_checks_and_reports_each_exercise(generated, tmp_path, monkeypatch):
    """A partial lab-1 submission: 1a and 1b solved, check 1c weakened by the student, check 1h deleted."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    student = nbformat.read(generated["student"] / "lab01_backprop.ipynb", as_version=4)
    solution = nbformat.read(generated["solution"] / "lab01_backprop.ipynb", as_version=4)
    solved = {"def forward(", "def bce_loss("}
    cells = []
    for stu, sol in zip(student.cells, solution.cells):
        cid = make_labs.cell_check_id(stu)
        if any(stu.source.startswith(s) for s in solved):
            stu = sol
        elif cid == "1c":
            stu.source = "### CHECK 1c: backward pass\npass  # weakened by the student"
        elif cid == "1h":
            continue
        cells.append(stu)
    student.cells = cells
    path = tmp_path / "alice_lab01_backprop.ipynb"
    nbformat.write(student, path)
    lab, results, other = make_labs.grade_one(path, timeout=300, fast=True)
    status = {r.exercise: r.status for r in results}
    assert lab == "lab01_backprop"
    assert status == {"1a": "PASS", "1b": "PASS", "1c": "FAIL", "1d": "FAIL", "1e": "FAIL", "1f": "FAIL",
                      "1g": "FAIL", "1h": "MISSING"}
    assert "not implemented yet" in next(r.message for r in results if r.exercise == "1c")
    assert other > 0
