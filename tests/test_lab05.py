"""Lab 5 (labs/src/lab05_cagem.ipynb), its checks (labs/labcheck.py, section "Lab 5") and the library-side terms they
use (dgmlab.cagem_lab): the checks accept correct answers and name the usual mistakes in their failure messages; the
per-cluster terms handed to the student reproduce the library's bounds. The generic notebook tests of
tests/test_labs.py (the solution runs, every student check fails with its hint) cover this lab as well."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dgmlab import cagem_lab
from dgmlab.cagem_lab import cagem_terms, draw_noise, tiny_cagem

LABS = Path(__file__).resolve().parents[1] / "labs"
sys.path.insert(0, str(LABS))
import labcheck  # noqa: E402
import make_labs  # noqa: E402
from labcheck import check_cagem_unlabelled_bound, check_cascade_classifier, check_labelled_terms  # noqa: E402


def _fails(check, fn, match: str) -> str:
    with pytest.raises(AssertionError, match=match) as info:
        check(fn)
    return str(info.value)


# Correct answers ------------------------------------------------------------------------------------------------------

def f_ok(t):
    return t["log_px"] + t["log_pz1"] + t["log_py"] + t["log_pz2"] - t["log_qz1"][:, None] - t["log_qz2"]


def entropy(scores, dim=-1):
    return -(torch.softmax(scores, dim) * torch.log_softmax(scores, dim)).sum(-1)


def u_ok(scores, f):
    return (torch.softmax(scores, -1) * f).sum(-1) + entropy(scores)


def cascade_ok(scores, table):
    return torch.logsumexp(torch.log_softmax(scores, -1)[:, :, None] + table, 1)


def test_lab5_source_has_three_checked_exercises():
    lab = make_labs.read_lab(LABS / "src" / "lab05_cagem.ipynb")
    assert [cid for cid, _ in lab.checks] == ["5a", "5b", "5c"]
    assert lab.n_exercises == 3


def test_lab5_checks_accept_correct_answers(capsys):
    check_labelled_terms(f_ok)
    check_cagem_unlabelled_bound(u_ok)
    check_cascade_classifier(cascade_ok)
    # an equivalent way to write the entropy passes too
    check_cagem_unlabelled_bound(lambda s, f: (torch.softmax(s, -1) * (f - torch.log_softmax(s, -1))).sum(-1))
    assert capsys.readouterr().out.count("\u2714 Exercise 5") == 4


def test_the_terms_reproduce_the_library():
    model = tiny_cagem(3)
    x = torch.rand(4, model.config.x_dim, dtype=torch.float64).bernoulli()
    noise = draw_noise(model, x, torch.Generator().manual_seed(0))
    t = cagem_terms(model, x, noise)
    with torch.no_grad():
        bound = model.unlabelled_bound(x, noise=noise)
        _, log_p = model.classifier_log_probs(x, 1, noise)
    assert torch.allclose(torch.log_softmax(t["scores"], -1), bound.class_log_probs[0])
    assert not torch.allclose(t["scores"], bound.class_log_probs[0])  # raw scores: the student must normalise
    assert torch.allclose(u_ok(t["scores"], f_ok(t)), bound.value)
    assert torch.allclose(cascade_ok(t["scores"], t["log_p_y_given_z2"]), log_p[0])


def test_a_stub_names_the_exercise_and_its_hint():
    def labelled_terms(t):
        raise NotImplementedError("add the log p tables")

    msg = _fails(check_labelled_terms, labelled_terms, "not implemented yet")
    assert msg.startswith("Exercise 5a is not implemented yet") and "Hint: add the log p tables" in msg


# Wrong answers: every usual mistake gets its own message --------------------------------------------------------------

def _kl_terms(t):
    return t["log_qz1"][:, None] - t["log_pz1"], t["log_qz2"] - t["log_pz2"]


@pytest.mark.parametrize("wrong, match", [
    (lambda t: t["log_px"] + t["log_py"] + _kl_terms(t)[0] - _kl_terms(t)[1], "KL term of z1 has the wrong sign"),
    (lambda t: t["log_px"] + t["log_py"] - _kl_terms(t)[0] + _kl_terms(t)[1], "KL term of z2 has the wrong sign"),
    (lambda t: t["log_px"] + t["log_py"] + _kl_terms(t)[0] + _kl_terms(t)[1], "both KL terms have the wrong sign"),
    (lambda t: f_ok(t) - t["log_py"], r"log p\(y\|z2\) is missing"),
    (lambda t: f_ok(t) + t["log_qz1"][:, None], r"log q\(z1\|x\) is missing"),
    (lambda t: f_ok(t) + t["log_qz2"], r"log q\(z2\|x,y,z1\) is missing"),
    (lambda t: t["log_px"] + t["log_pz1"] + t["log_py"] + t["log_pz2"] - t["log_qz1"] - t["log_qz2"],
     r"shape mismatch .* t\['log_qz1'\]\[:, None\]"),
    (lambda t: f_ok(t).t(), r"shape \(K, B\)"),
    (lambda t: f_ok(t).sum(-1), r"expected \(B, K\)"),
    (lambda t: -f_ok(t), "negative of f"),
])
def test_lab5a_names_the_mistake(wrong, match):
    _fails(check_labelled_terms, wrong, match)


@pytest.mark.parametrize("wrong, match", [
    # summing over y without the q(y) weights
    (lambda s, f: f.sum(-1) + entropy(s), "summed without the weights q"),
    (lambda s, f: f.sum(-1), "summed without the weights q"),
    (lambda s, f: f.mean(-1) + entropy(s), "averaged the cluster terms"),
    # forgetting the entropy term, or its sign
    (lambda s, f: (torch.softmax(s, -1) * f).sum(-1), "entropy term .* is missing"),
    (lambda s, f: (torch.softmax(s, -1) * f).sum(-1) - entropy(s), "entropy has the wrong sign"),
    # log q instead of q as weights
    (lambda s, f: (torch.log_softmax(s, -1) * f).sum(-1) + entropy(s), r"by log q\(y\|z1,x\) instead of q"),
    (lambda s, f: (torch.log_softmax(s, -1) * f).sum(-1), r"by log q\(y\|z1,x\) instead of q"),
    (lambda s, f: (s * f).sum(-1) + entropy(s), "raw scores as weights"),
    # normalising over the wrong axis
    (lambda s, f: (torch.softmax(s, 0) * f).sum(-1) + entropy(s, 0), "normalised over the wrong axis"),
    (lambda s, f: (torch.softmax(s, 0) * f).sum(-1) + entropy(s), "normalised over the wrong axis"),
    (lambda s, f: (torch.softmax(s, -1) * f).sum(0), "summed over the batch"),
    # the exact marginal instead of the bound, and a loss instead of the bound
    (lambda s, f: torch.logsumexp(f, -1), r"log sum_y exp f"),
    (lambda s, f: -u_ok(s, f), "negative bound"),
])
def test_lab5b_names_the_mistake(wrong, match):
    _fails(check_cagem_unlabelled_bound, wrong, match)


@pytest.mark.parametrize("wrong, match", [
    (lambda s, t: torch.logsumexp(t, 1) - math.log(t.shape[1]), "equal weights 1/K"),
    (lambda s, t: torch.logsumexp(torch.log_softmax(s, -1)[:, None, :] + t, 2), "wrong axis of log_p_y_given_z2"),
    (lambda s, t: torch.log((torch.log_softmax(s, -1)[:, :, None] * t.exp()).sum(1)), "NaN"),
    (lambda s, t: (torch.log_softmax(s, -1)[:, :, None] * t.exp()).sum(1), r"by log q\(c\|z1,x\) instead of q"),
    (lambda s, t: cascade_ok(s, t).exp(), "returned probabilities"),
    (lambda s, t: t[torch.arange(len(s)), s.argmax(-1)], "most probable cluster"),
    (lambda s, t: torch.logsumexp(torch.log_softmax(s, 0)[:, :, None] + t, 1), "normalised over the wrong axis"),
    (lambda s, t: torch.logsumexp(torch.log_softmax(s, -1)[:, :, None] * t, 1), "multiplied log-probabilities"),
    (lambda s, t: cascade_ok(s, t).sum(-1), r"expected \(B, K\)"),
])
def test_lab5c_names_the_mistake(wrong, match):
    _fails(check_cascade_classifier, wrong, match)


def test_an_unrecognised_mistake_still_says_how_far_off_and_what_to_compute():
    msg = _fails(check_cagem_unlabelled_bound, lambda s, f: u_ok(s, f) + 0.3, "differs from CaGeM.unlabelled_bound")
    assert "softmax(scores, -1)" in msg
    msg = _fails(check_labelled_terms, lambda t: f_ok(t) * 1.01, "differs from CaGeM.labelled_bound")
    assert "log_qz1 broadcast" in msg


def test_checks_leave_the_random_state_alone():
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    check_cagem_unlabelled_bound(u_ok)
    assert torch.equal(torch.rand(3), before)
    assert cagem_lab.__all__  # the module documents its public names


def test_checks_live_in_labcheck_which_imports_dgmlab_only_when_a_lab5_check_runs():
    assert {"check_labelled_terms", "check_cagem_unlabelled_bound", "check_cascade_classifier"} <= set(labcheck.__all__)
    assert not any(name.startswith("check") for name in cagem_lab.__all__)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import labcheck; "
            "assert not [m for m in sys.modules if m.split('.')[0] == 'dgmlab'], 'labcheck imported dgmlab'")
    run = subprocess.run([sys.executable, "-c", code, str(LABS)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
