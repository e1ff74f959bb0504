"""Automatic checks for the dgmlab labs (labs/src/*.ipynb).

Every exercise in a lab is followed by a check cell that calls one ``check_*`` function of this module with the
student's function. A check runs the student's code on several random inputs, compares the result with a reference
(a finite-difference estimate, torch autograd or ``torch.distributions``) and either prints a short confirmation or
raises ``AssertionError`` with a message that says what is wrong and what to try. A stub that still raises
``NotImplementedError`` turns into an ``AssertionError`` saying that the exercise is not done yet, with its hint.

The module imports only NumPy and PyTorch, so that ``labs/student/`` can be handed out as a self-contained folder: the
checks of Labs 1-4 and 6 work without dgmlab. The exception is Lab 5 (the CaGeM unlabelled bound): its checks compare
with dgmlab's own CaGeM (``dgmlab.models.cagem``, through ``dgmlab.cagem_lab``) and import dgmlab when they are
called, never when this module is imported; that lab uses dgmlab anyway. The reference implementations below are
visible to anyone who opens this file: the checks are for learning, not for exams (see book/instructors.md).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Normal, kl_divergence

__all__ = [
    "check_forward", "check_bce_loss", "check_backward", "check_numerical_gradient", "check_autograd_gradients",
    "check_training", "check_softmax", "check_softmax_cross_entropy",
    "check_reparameterised_sample", "check_gaussian_kl", "check_bernoulli_log_likelihood", "check_vae_loss",
    "check_labelled_bound", "check_unlabelled_bound", "check_hand_computed_case", "check_m2_loss", "check_alpha",
    "TinyVAE", "TinyM2",
]

# ----------------------------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------------------------

_STUB_MESSAGE = "replace the `raise NotImplementedError(...)` line with your code"


def _innermost_function(err: BaseException) -> str:
    tb = err.__traceback__
    name = "?"
    while tb is not None:
        name = tb.tb_frame.f_code.co_name
        tb = tb.tb_next
    return name


def _call(exercise: str, fn: Callable, *args, **kwargs):
    """Call the student's ``fn``; an unfinished stub becomes an AssertionError that names the exercise and its hint."""
    __tracebackhide__ = True  # IPython hides this frame from the traceback
    if not callable(fn):
        raise AssertionError(f"Exercise {exercise}: expected a function, got {type(fn).__name__}; pass the function "
                             f"itself (no parentheses) to the check")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as err:
        hint = str(err).strip() or "read the exercise text above"
        where = _innermost_function(err)
        own = getattr(fn, "__name__", where)
        if where in (own, "?"):
            msg = f"Exercise {exercise} is not implemented yet: {_STUB_MESSAGE} in `{own}`. Hint: {hint}"
        else:
            msg = (f"Exercise {exercise} is not implemented yet: `{own}` calls `{where}`, which still raises "
                   f"NotImplementedError; {_STUB_MESSAGE} there first. Hint: {hint}")
        raise AssertionError(msg) from None


def _keeps_rng(check: Callable) -> Callable:
    """Run a check without disturbing the notebook's random state (checks draw their own random inputs)."""

    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        __tracebackhide__ = True
        np_state = np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            try:
                return check(*args, **kwargs)
            finally:
                np.random.set_state(np_state)

    return wrapper


def _fail(exercise: str, message: str):
    __tracebackhide__ = True
    raise AssertionError(f"Exercise {exercise}: {message}")


def _passed(exercise: str, message: str) -> None:
    print(f"\u2714 Exercise {exercise} passed: {message}")


def _np(value, exercise: str, what: str) -> np.ndarray:
    """A student's result as a float64 NumPy array (torch tensors are accepted too)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        _fail(exercise, f"{what} should be an array of numbers, got {type(value).__name__}")
    return arr


def _rel(a, b) -> float:
    """Relative difference ``||a - b|| / max(||a||, ||b||)`` (0 when both are 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)
    return float(np.linalg.norm(a - b) / scale)


def _shape(arr: np.ndarray, expected: tuple, exercise: str, what: str, fix: str = "") -> None:
    if tuple(arr.shape) != tuple(expected):
        _fail(exercise, f"{what} has shape {tuple(arr.shape)}, expected {tuple(expected)}. {fix}".rstrip())


def _t(value, exercise: str, what: str, fix: str = "so that gradients can flow") -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        _fail(exercise, f"{what} should be a torch.Tensor, got {type(value).__name__}; build it with torch "
                        f"operations {fix}")
    return value


def _close_t(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    return _rel(a.detach().double().cpu().numpy(), b.detach().double().cpu().numpy()) < tol


def _same(a, b, tol: float = 1e-9) -> bool:
    """``a`` is a tensor of the shape of ``b`` and their relative difference is below ``tol`` (NaNs never match)."""
    if not isinstance(a, torch.Tensor) or tuple(a.shape) != tuple(b.shape):
        return False
    return _rel(a.detach().double().cpu().numpy(), b.detach().double().cpu().numpy()) < tol


# ----------------------------------------------------------------------------------------------------------------------
# Lab 1: backpropagation from scratch (thesis eqs. 2.1-2.7, 2.10-2.12)
# ----------------------------------------------------------------------------------------------------------------------

def _sigmoid(a: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -a))


def _ref_forward(params: dict, X: np.ndarray):
    a1 = X @ params["W1"] + params["b1"]
    h = np.tanh(a1)
    a2 = h @ params["W2"] + params["b2"]
    return _sigmoid(a2[:, 0]), h


def _ref_bce(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _ref_loss(params: dict, X: np.ndarray, y: np.ndarray) -> float:
    return _ref_bce(_ref_forward(params, X)[0], y)


def _backward_variants(params: dict, X: np.ndarray, y: np.ndarray) -> dict[str, dict]:
    """The correct gradients and the gradients of common mistakes, each mapped to the advice that fixes it."""
    p, h = _ref_forward(params, X)
    n = len(y)

    def grads(d2, tanh_prime, mean=True):
        d2 = (d2 / n if mean else d2)[:, None]
        dh = d2 @ params["W2"].T
        d1 = dh * tanh_prime
        return {"W1": X.T @ d1, "b1": d1.sum(0), "W2": h.T @ d2, "b2": d2.sum(0)}

    return {
        "correct": grads(p - y, 1 - h ** 2),
        "Did you forget the derivative of tanh, 1 - tanh(a)^2 = 1 - h^2, when passing the error through the hidden "
        "layer?": grads(p - y, np.ones_like(h)),
        "The derivative of tanh must be taken at the pre-activation a1: tanh'(a1) = 1 - tanh(a1)^2 = 1 - h^2 "
        "(you applied it to h itself).": grads(p - y, 1 - np.tanh(h) ** 2),
        "Your gradients are N times too large: the loss is the MEAN over the N points, so dL/da2 = (p - y) / N.":
            grads(p - y, 1 - h ** 2, mean=False),
        "Your gradients have the wrong sign: dL/da2 = p - y (prediction minus target), not y - p.":
            grads(y - p, 1 - h ** 2),
        "The sigmoid's derivative p(1 - p) cancels against the derivative of the cross-entropy: dL/da2 = (p - y)/N "
        "with no extra p(1 - p) factor.": grads((p - y) * p * (1 - p), 1 - h ** 2),
    }


def _finite_difference(f: Callable[[], float], theta: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(theta)
    for idx in np.ndindex(theta.shape):
        old = theta[idx]
        theta[idx] = old + eps
        fp = f()
        theta[idx] = old - eps
        fm = f()
        theta[idx] = old
        grad[idx] = (fp - fm) / (2 * eps)
    return grad


def _random_mlp(rng: np.random.Generator, d: int = 2, h: int = 5) -> dict:
    return {"W1": rng.normal(0, 1.0, (d, h)), "b1": rng.normal(0, 0.5, h),
            "W2": rng.normal(0, 1.0, (h, 1)), "b2": rng.normal(0, 0.5, 1)}


@_keeps_rng
def check_forward(forward: Callable, seed: int = 0) -> None:
    """Exercise 1a: ``forward(params, X) -> (p, cache)`` of the 2 -> tanh -> sigmoid network (eqs. 2.1-2.5)."""
    __tracebackhide__ = True
    ex = "1a"
    rng = np.random.default_rng(seed)
    for trial in range(3):
        params, X = _random_mlp(rng), rng.normal(size=(7, 2))
        out = _call(ex, forward, {k: v.copy() for k, v in params.items()}, X.copy())
        if not (isinstance(out, tuple) and len(out) == 2):
            _fail(ex, "forward must return a pair (p, cache); keep the `return p, {...}` line of the template")
        p = _np(out[0], ex, "p")
        want, h = _ref_forward(params, X)
        if p.shape == (7, 1):
            _fail(ex, "p has shape (N, 1); return a vector of shape (N,), e.g. sigmoid(a2[:, 0]) or a2.ravel()")
        _shape(p, (7,), ex, "p")
        if _rel(p, want) < 1e-8:
            continue
        a2 = h @ params["W2"] + params["b2"]
        relu_p = _sigmoid((np.maximum(X @ params["W1"] + params["b1"], 0) @ params["W2"] + params["b2"])[:, 0])
        nobias_p = _sigmoid((np.tanh(X @ params["W1"]) @ params["W2"])[:, 0])
        if _rel(p, a2[:, 0]) < 1e-8:
            _fail(ex, "you returned the logits a2; apply the sigmoid (eq. 2.4) to get probabilities in (0, 1)")
        if _rel(p, np.tanh(a2[:, 0])) < 1e-8:
            _fail(ex, "the output uses tanh; the output unit is a sigmoid, sigma(a) = 1 / (1 + exp(-a)) (eq. 2.4)")
        if _rel(p, relu_p) < 1e-8:
            _fail(ex, "the hidden layer uses ReLU; this lab's network uses tanh in the hidden layer (eq. 2.5)")
        if _rel(p, nobias_p) < 1e-8:
            _fail(ex, "the biases b1 and b2 are missing: a1 = X @ W1 + b1, a2 = h @ W2 + b2")
        if np.any(p < 0) or np.any(p > 1):
            _fail(ex, "some outputs lie outside [0, 1]; the last step must be the sigmoid")
        _fail(ex, f"p differs from the reference by {_rel(p, want):.3g} (relative) on random inputs (trial {trial}). "
                  f"Compute a1 = X @ W1 + b1, h = tanh(a1), a2 = h @ W2 + b2, p = sigmoid(a2) with X of shape (N, 2).")
    _passed(ex, "the forward pass matches the reference on 3 random networks")


@_keeps_rng
def check_bce_loss(bce_loss: Callable, seed: int = 0) -> None:
    """Exercise 1b: mean Bernoulli cross-entropy (eq. 2.10, divided by N)."""
    __tracebackhide__ = True
    ex = "1b"
    rng = np.random.default_rng(seed)
    for _ in range(3):
        n = 9
        p, y = rng.uniform(0.05, 0.95, n), rng.integers(0, 2, n).astype(float)
        got = _np(_call(ex, bce_loss, p.copy(), y.copy()), ex, "the loss")
        if got.shape != ():
            _fail(ex, f"the loss should be a single number, got shape {got.shape}; average over the points")
        want = _ref_bce(p, y)
        got = float(got)
        if abs(got - want) < 1e-9 * max(1.0, abs(want)):
            continue
        if abs(got + want) < 1e-9:
            _fail(ex, "your loss has the wrong sign: it is MINUS the mean log-likelihood, so it is positive")
        if abs(got - n * want) < 1e-8:
            _fail(ex, "you summed over the points; this lab uses the mean (divide by N) so the learning rate does "
                      "not depend on the batch size")
        if abs(got - float(-np.mean(y * np.log(p)))) < 1e-9:
            _fail(ex, "the (1 - y) log(1 - p) term is missing: the negative class contributes too (eq. 2.10)")
        _fail(ex, f"loss {got:.6f} differs from the reference {want:.6f}; "
                  f"L = -mean(y * log(p) + (1 - y) * log(1 - p))")
    _passed(ex, "the loss matches the reference on random inputs")


@_keeps_rng
def check_backward(backward: Callable, seed: int = 0) -> None:
    """Exercise 1c: gradients of every parameter, compared with central finite differences of the loss."""
    __tracebackhide__ = True
    ex = "1c"
    rng = np.random.default_rng(seed)
    for trial in range(3):
        params, X = _random_mlp(rng), rng.normal(size=(6, 2))
        y = rng.integers(0, 2, 6).astype(float)
        p, h = _ref_forward(params, X)
        cache = {"X": X.copy(), "h": h.copy(), "p": p.copy()}
        grads = _call(ex, backward, {k: v.copy() for k, v in params.items()}, cache, y.copy())
        if not isinstance(grads, dict):
            _fail(ex, f"backward must return a dict {{'W1': ..., 'b1': ..., 'W2': ..., 'b2': ...}}, "
                      f"got {type(grads).__name__}")
        missing = [k for k in params if k not in grads]
        if missing:
            _fail(ex, f"the gradient dict lacks {missing}; return one gradient per parameter")
        got = {k: _np(grads[k], ex, f"grads['{k}']") for k in params}
        for k in params:
            fix = {"W1": "use X.T @ delta1 (shape (2, H))", "W2": "use h.T @ delta2 (shape (H, 1))",
                   "b1": "sum delta1 over the batch axis: delta1.sum(axis=0)",
                   "b2": "sum delta2 over the batch axis: delta2.sum(axis=0)"}[k]
            if got[k].ndim != params[k].ndim and got[k].size == params[k].size:
                got[k] = got[k].reshape(params[k].shape)  # e.g. (H,) for W2 of shape (H, 1): the numbers decide
            _shape(got[k], params[k].shape, ex, f"grads['{k}']",
                   f"A gradient has the shape of its parameter; {fix}.")
        numeric = {}
        for k in params:
            def f(k=k):
                return _ref_loss(params, X, y)
            numeric[k] = _finite_difference(f, params[k])
        errors = {k: _rel(got[k], numeric[k]) for k in params}
        if max(errors.values()) < 1e-6:
            continue
        wrong = [k for k in params if errors[k] >= 1e-6]
        if len(wrong) == 1:
            summary = (f"your gradient for {wrong[0]} differs from the finite-difference estimate by "
                       f"{errors[wrong[0]]:.2g} (relative)")
        else:
            summary = (f"your gradients for {', '.join(wrong)} differ from the finite-difference estimates by "
                       f"{', '.join(f'{errors[k]:.2g}' for k in wrong)} (relative)")
        variants = _backward_variants(params, X, y)
        for advice, g in variants.items():
            if advice != "correct" and all(_rel(got[k], g[k]) < 1e-6 for k in params):
                _fail(ex, f"{summary}. {advice}")
        if wrong == ["W1"]:
            advice = "b1 is right, so delta1 is right; the weight gradient is dW1 = X.T @ delta1."
        elif wrong == ["W2"]:
            advice = "b2 is right, so delta2 is right; the weight gradient is dW2 = h.T @ delta2."
        elif set(wrong) <= {"b1", "b2"}:
            advice = "Only biases are wrong: a bias gradient is its layer's delta summed over the batch (axis 0)."
        elif set(wrong) <= {"W1", "b1"}:
            advice = ("The output layer is right, so the error is in the hidden layer: delta1 = (delta2 @ W2.T) * "
                      "(1 - h**2); did you forget the derivative of tanh, 1 - tanh(a)^2?")
        else:
            advice = ("Work backwards from the output: delta2 = (p - y)[:, None] / N, dW2 = h.T @ delta2, "
                      "db2 = delta2.sum(0), delta1 = (delta2 @ W2.T) * (1 - h**2), dW1 = X.T @ delta1, "
                      "db1 = delta1.sum(0).")
        _fail(ex, f"{summary} on random inputs (trial {trial}). {advice}")
    _passed(ex, "all four gradients agree with central finite differences (relative error < 1e-6)")


@_keeps_rng
def check_numerical_gradient(numerical_gradient: Callable, seed: int = 0) -> None:
    """Exercise 1d: central finite differences ``(f(t + eps) - f(t - eps)) / (2 eps)``, one entry at a time."""
    __tracebackhide__ = True
    ex = "1d"
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.5, 1.5, (3, 4))
    original = theta.copy()
    eps = 1e-2

    def f(t):
        return float(np.sum(t ** 3) / 3 + np.sum(t[0] * t[1]))

    exact = theta ** 2
    exact[0] += theta[1]
    exact[1] += theta[0]
    got = _np(_call(ex, numerical_gradient, f, theta, eps), ex, "the numerical gradient")
    if not np.array_equal(theta, original):
        _fail(ex, "theta was changed by your function: restore every entry after perturbing it "
                  "(theta[idx] = old_value), or the next entries are evaluated at the wrong point")
    _shape(got, theta.shape, ex, "the numerical gradient", "Return an array shaped like theta (np.zeros_like(theta)).")
    err = _rel(got, exact)
    if err < 1e-3:
        _passed(ex, f"central differences reproduce the exact gradient (relative error {err:.1e} with eps = {eps})")
        return
    forward_diff = np.zeros_like(theta)
    for idx in np.ndindex(theta.shape):
        t = theta.copy()
        t[idx] += eps
        forward_diff[idx] = (f(t) - f(theta)) / eps
    if _rel(got, forward_diff) < 1e-6:
        _fail(ex, f"you used one-sided differences (f(t + eps) - f(t)) / eps, relative error {err:.1e}. Use central "
                  f"differences (f(t + eps) - f(t - eps)) / (2 eps): their error shrinks like eps^2, not eps.")
    if _rel(got, 2 * exact) < 1e-3:
        _fail(ex, "your gradient is twice the true one: divide f(t + eps) - f(t - eps) by 2 * eps")
    if _rel(got, exact / 2) < 1e-3:
        _fail(ex, "your gradient is half the true one: divide f(t + eps) - f(t - eps) by 2 * eps, not 4 * eps")
    if np.allclose(got, got.flat[0]):
        _fail(ex, "all entries are equal: perturb ONE entry of theta at a time (loop with np.ndindex(theta.shape))")
    _fail(ex, f"numerical gradient differs from the exact gradient by {err:.2g} (relative) for f(t) = sum(t^3)/3 + "
              f"sum(t[0] * t[1]) with eps = {eps}; for each index: save the value, evaluate f at value + eps and "
              f"value - eps, restore it, and store the difference divided by 2 eps")


@_keeps_rng
def check_autograd_gradients(autograd_gradients: Callable, seed: int = 0) -> None:
    """Exercise 1e: the same gradients from torch autograd."""
    __tracebackhide__ = True
    ex = "1e"
    rng = np.random.default_rng(seed)
    for _ in range(2):
        params, X = _random_mlp(rng), rng.normal(size=(8, 2))
        y = rng.integers(0, 2, 8).astype(float)
        grads = _call(ex, autograd_gradients, {k: v.copy() for k, v in params.items()}, X.copy(), y.copy())
        if not isinstance(grads, dict):
            _fail(ex, f"return a dict of gradients keyed like params, got {type(grads).__name__}")
        ref = _backward_variants(params, X, y)["correct"]
        for k in params:
            if k not in grads or grads[k] is None:
                _fail(ex, f"no gradient for {k}: create the tensors with requires_grad=True, call loss.backward() "
                          f"and read tensor.grad")
            g = _np(grads[k], ex, f"grads['{k}']").reshape(params[k].shape)
            err = _rel(g, ref[k])
            if err > 1e-5:
                if _rel(g, len(y) * ref[k]) < 1e-5:
                    _fail(ex, f"grads['{k}'] is N times too large: take the mean of the loss, not the sum")
                if err < 1e-3:
                    _fail(ex, f"grads['{k}'] is close but not exact (relative error {err:.1e}): build the tensors "
                              f"with dtype=torch.float64 so that the comparison with NumPy is tight")
                _fail(ex, f"grads['{k}'] differs from the analytic gradient by {err:.2g} (relative); write the same "
                          f"forward pass and mean cross-entropy with torch operations (torch.tanh, torch.sigmoid)")
    _passed(ex, "autograd agrees with the analytic gradients")


@_keeps_rng
def check_training(train: Callable, X_test: np.ndarray, y_test: np.ndarray, min_accuracy: float = 0.95,
                   **train_kwargs):
    """Exercise 1f: run the student's ``train(**train_kwargs) -> (params, losses)``; returns them for later cells."""
    __tracebackhide__ = True
    ex = "1f"
    out = _call(ex, train, **train_kwargs)
    if not (isinstance(out, tuple) and len(out) == 2):
        _fail(ex, "train must return (params, losses)")
    params, losses = out
    losses = _np(losses, ex, "losses").ravel()
    if len(losses) < 2:
        _fail(ex, "record the loss of every step in the list `losses`")
    if not np.all(np.isfinite(losses)):
        _fail(ex, "the loss became nan or inf: the learning rate is too large, or log(0) occurred")
    if losses[-1] > losses[0]:
        _fail(ex, f"the loss went UP from {losses[0]:.3f} to {losses[-1]:.3f}: step against the gradient, "
                  f"theta <- theta - lr * grad (eq. 2.12), or lower the learning rate")
    p, _ = _ref_forward(params, np.asarray(X_test, dtype=np.float64))
    acc = float(np.mean((p > 0.5) == (np.asarray(y_test) > 0.5)))
    if acc < min_accuracy:
        _fail(ex, f"test accuracy {acc:.3f} is below {min_accuracy}: the loss fell from {losses[0]:.3f} to "
                  f"{losses[-1]:.3f}. Train for more steps or with a larger learning rate, and check that every "
                  f"parameter is updated")
    _passed(ex, f"test accuracy {acc:.3f} (loss {losses[0]:.3f} -> {losses[-1]:.3f})")
    return params, list(losses)


@_keeps_rng
def check_softmax(softmax: Callable, seed: int = 0) -> None:
    """Exercise 1g: a numerically stable softmax over the last axis (eq. 2.7)."""
    __tracebackhide__ = True
    ex = "1g"
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(5, 3))
    got = _np(_call(ex, softmax, a.copy()), ex, "softmax(a)")
    want = torch.softmax(torch.from_numpy(a), -1).numpy()
    _shape(got, a.shape, ex, "softmax(a)", "Normalise each row: keep the shape (N, K).")
    if _rel(got, want) > 1e-10:
        if np.allclose(got.sum(0), 1):
            _fail(ex, "you normalised over the wrong axis: each ROW (one data point) must sum to one; use "
                      "axis=-1 with keepdims=True")
        _fail(ex, f"softmax differs from torch.softmax by {_rel(got, want):.2g}; softmax(a)_k = exp(a_k) / "
                  f"sum_j exp(a_j)")
    big = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1002.0, -1001.0]])
    with np.errstate(all="ignore"):
        got = _np(_call(ex, softmax, big.copy()), ex, "softmax(a)")
    want = torch.softmax(torch.from_numpy(big), -1).numpy()
    if not np.all(np.isfinite(got)) or _rel(got, want) > 1e-10:
        _fail(ex, "softmax of large logits (about +-1000) gave nan or wrong values: exp overflows. Subtract the "
                  "row maximum first, softmax(a) = softmax(a - max(a)), which leaves the result unchanged")
    _passed(ex, "matches torch.softmax, also for logits of size 1000")


@_keeps_rng
def check_softmax_cross_entropy(softmax_cross_entropy: Callable, seed: int = 0) -> None:
    """Exercise 1h: mean categorical cross-entropy (eq. 2.11) and its gradient w.r.t. the logits."""
    __tracebackhide__ = True
    ex = "1h"
    rng = np.random.default_rng(seed)
    for _ in range(3):
        a, y = rng.normal(size=(6, 4)) * 2, rng.integers(0, 4, 6)
        out = _call(ex, softmax_cross_entropy, a.copy(), y.copy())
        if not (isinstance(out, tuple) and len(out) == 2):
            _fail(ex, "return a pair (loss, grad_a)")
        loss, grad = float(_np(out[0], ex, "loss")), _np(out[1], ex, "grad_a")
        at = torch.from_numpy(a).requires_grad_(True)
        ref = F.cross_entropy(at, torch.from_numpy(y))
        ref.backward()
        want_g = at.grad.numpy()
        if abs(loss - ref.item()) > 1e-9:
            if abs(loss - len(y) * ref.item()) < 1e-8:
                _fail(ex, "the loss is summed over points; take the mean (divide by N)")
            if abs(loss + ref.item()) < 1e-9:
                _fail(ex, "the loss has the wrong sign: L = -mean_n log softmax(a_n)[y_n]")
            _fail(ex, f"loss {loss:.6f} differs from torch's cross_entropy {ref.item():.6f}: "
                      f"L = -mean_n log softmax(a_n)[y_n] (eq. 2.11 with one-hot y)")
        _shape(grad, a.shape, ex, "grad_a")
        if _rel(grad, want_g) > 1e-8:
            if _rel(grad, len(y) * want_g) < 1e-8:
                _fail(ex, "grad_a is N times too large: divide (softmax(a) - onehot(y)) by N")
            if _rel(grad, -want_g) < 1e-8:
                _fail(ex, "grad_a has the wrong sign: it is softmax(a) - onehot(y), prediction minus target")
            _fail(ex, f"grad_a differs from autograd by {_rel(grad, want_g):.2g}; the gradient of the mean "
                      f"cross-entropy w.r.t. the logits is (softmax(a) - onehot(y)) / N")
    _passed(ex, "loss and gradient match torch's cross_entropy and autograd")


# ----------------------------------------------------------------------------------------------------------------------
# Lab 2: the VAE's building blocks (thesis eqs. 3.19-3.30)
# ----------------------------------------------------------------------------------------------------------------------

class TinyVAE(nn.Module):
    """A small Bernoulli VAE with ``encode(x) -> (mu, log_var)`` and ``decode(z) -> logits``.

    ``log_var_shift`` is added to the encoder's log-variance: a large negative value makes ``q(z|x)`` nearly a point
    mass, so that a one-sample bound becomes (almost) deterministic and can be compared with a reference exactly.
    """

    def __init__(self, x_dim: int = 12, z_dim: int = 3, hidden: int = 16, log_var_shift: float = 0.0):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh())
        self.mu, self.log_var = nn.Linear(hidden, z_dim), nn.Linear(hidden, z_dim)
        self.dec = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))
        self.log_var_shift = log_var_shift

    def encode(self, x):
        h = self.enc(x)
        return self.mu(h), self.log_var(h) + self.log_var_shift

    def decode(self, z):
        return self.dec(z)


def _ref_kl(mu, log_var):
    return kl_divergence(Normal(mu, (0.5 * log_var).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)


@_keeps_rng
def check_reparameterised_sample(reparameterised_sample: Callable, seed: int = 0) -> None:
    """Exercise 2a: ``z = mu + exp(log_var / 2) * eps`` (eqs. 3.19-3.21), differentiable in ``mu`` and ``log_var``."""
    __tracebackhide__ = True
    ex = "2a"
    gen = torch.Generator().manual_seed(seed)
    mu = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    log_var = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    eps = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    z = _t(_call(ex, reparameterised_sample, mu, log_var, eps), ex, "z")
    want = mu + (0.5 * log_var).exp() * eps
    if z.shape != mu.shape:
        _fail(ex, f"z has shape {tuple(z.shape)}, expected {tuple(mu.shape)} (one sample per entry of mu)")
    if not _close_t(z, want, 1e-10):
        if _close_t(z, mu + log_var.exp() * eps, 1e-10):
            _fail(ex, "you used exp(log_var) = sigma^2 as the standard deviation; sigma = exp(log_var / 2)")
        if _close_t(z, mu + log_var * eps, 1e-10):
            _fail(ex, "log_var is the LOG-variance: the standard deviation is exp(log_var / 2)")
        if _close_t(z, mu + (0.5 * log_var).exp(), 1e-10):
            _fail(ex, "multiply the standard deviation by eps: z = mu + sigma * eps")
        _fail(ex, f"with eps given, z should equal mu + exp(log_var / 2) * eps; relative difference "
                  f"{_rel(z.detach().numpy(), want.numpy()):.2g}")
    if z.dtype != mu.dtype:
        _fail(ex, f"z has dtype {z.dtype} but mu has {mu.dtype}: draw eps with torch.randn_like(mu)")
    # Without eps: fresh noise of the right distribution, and gradients reach mu and log_var.
    mu = torch.tensor([[0.5, -2.0, 3.0]]).repeat(20000, 1).requires_grad_(True)
    log_var = torch.tensor([[0.0, math.log(0.25), math.log(4.0)]]).repeat(20000, 1).requires_grad_(True)
    torch.manual_seed(seed)
    z = _t(_call(ex, reparameterised_sample, mu, log_var), ex, "z")
    if z.shape != mu.shape:
        _fail(ex, f"without eps, z has shape {tuple(z.shape)}, expected {tuple(mu.shape)}")
    if not z.requires_grad:
        _fail(ex, "z does not depend differentiably on mu and log_var: Normal(...).sample() and torch.normal cut "
                  "the graph. Draw eps = torch.randn_like(mu) and return mu + sigma * eps (that is the "
                  "reparameterisation trick)")
    std = torch.tensor([1.0, 0.5, 2.0])
    m, s = z.detach().mean(0), z.detach().std(0)
    if torch.allclose(z.detach(), mu.detach()):
        _fail(ex, "without eps, z equals mu: draw fresh noise eps = torch.randn_like(mu) when eps is None")
    if (m - mu[0].detach()).abs().max() > 0.1 or ((s - std).abs() / std).max() > 0.05:
        _fail(ex, f"samples have mean {m.numpy().round(2)} and std {s.numpy().round(2)}, expected mean "
                  f"{mu[0].detach().numpy()} and std {std.numpy()}: use standard normal noise torch.randn_like(mu)")
    if (z[0] - z[1]).abs().max() == 0:
        _fail(ex, "every row got the same noise: use torch.randn_like(mu) so that each entry has its own eps")
    z.sum().backward()
    if mu.grad is None or log_var.grad is None:
        _fail(ex, "no gradient reached mu or log_var; build z from them with torch operations")
    eps_used = (z.detach() - mu.detach()) / (0.5 * log_var.detach()).exp()
    if not torch.allclose(mu.grad, torch.ones_like(mu)):
        _fail(ex, "dz/dmu should be 1: z = mu + sigma * eps")
    if not torch.allclose(log_var.grad, 0.5 * (0.5 * log_var.detach()).exp() * eps_used, atol=1e-5):
        _fail(ex, "dz/dlog_var should be sigma * eps / 2; compute sigma = torch.exp(0.5 * log_var) inside the graph")
    _passed(ex, "exact with given eps; N(mu, sigma^2) samples otherwise; gradients flow to mu and log_var")


@_keeps_rng
def check_gaussian_kl(gaussian_kl: Callable, seed: int = 0) -> None:
    """Exercise 2b: analytic ``KL(N(mu, diag sigma^2) || N(0, I))`` summed over the latent units (eq. 3.30)."""
    __tracebackhide__ = True
    ex = "2b"
    gen = torch.Generator().manual_seed(seed)
    zero = torch.zeros(2, 3, dtype=torch.float64)
    got0 = _t(_call(ex, gaussian_kl, zero, zero), ex, "the KL")
    if got0.shape == (2, 3):
        _fail(ex, "the KL has shape (batch, latent units); sum over the last axis to get one number per data point")
    if got0.shape != (2,):
        _fail(ex, f"the KL has shape {tuple(got0.shape)}, expected (batch,) = (2,): sum over the last axis only")
    if got0.abs().max() > 1e-12:
        _fail(ex, f"KL(N(0, I) || N(0, I)) must be 0, got {got0.tolist()}: did you forget the -1 inside "
                  f"0.5 * sum(mu^2 + sigma^2 - log sigma^2 - 1)?")
    for _ in range(3):
        mu = torch.randn(5, 4, generator=gen, dtype=torch.float64) * 2
        log_var = torch.randn(5, 4, generator=gen, dtype=torch.float64)
        got = _t(_call(ex, gaussian_kl, mu, log_var), ex, "the KL")
        want = _ref_kl(mu, log_var)
        if not _close_t(got, want, 1e-10):
            if _close_t(got, -want, 1e-10):
                _fail(ex, "your KL is negative; KL >= 0 always: 0.5 * sum(mu^2 + sigma^2 - log sigma^2 - 1)")
            alt = 0.5 * (mu ** 2 + (2 * log_var).exp() - 2 * log_var - 1).sum(-1)
            if _close_t(got, alt, 1e-10):
                _fail(ex, "you treated log_var as log sigma; here sigma^2 = exp(log_var)")
            if _close_t(got, 2 * want, 1e-10):
                _fail(ex, "your KL is twice the right value: the formula has a factor 1/2")
            _fail(ex, f"KL differs from torch.distributions.kl_divergence(Normal(mu, sigma), Normal(0, 1)).sum(-1) by "
                      f"{_rel(got.detach().numpy(), want.numpy()):.2g} (relative)")
    _passed(ex, "matches torch.distributions.kl_divergence summed over the latent units")


@_keeps_rng
def check_bernoulli_log_likelihood(bernoulli_log_likelihood: Callable, seed: int = 0) -> None:
    """Exercise 2c: ``log B(x | sigmoid(logits))`` summed over pixels, stable for large logits."""
    __tracebackhide__ = True
    ex = "2c"
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 6, generator=gen, dtype=torch.float64) * 3
    x = torch.randint(0, 2, (4, 6), generator=gen).double()
    got = _t(_call(ex, bernoulli_log_likelihood, logits, x), ex, "the log-likelihood")
    want = Bernoulli(logits=logits).log_prob(x).sum(-1)
    if got.shape == (4, 6):
        _fail(ex, "sum the log-likelihood over the pixels (last axis): one number per image")
    if got.shape != (4,):
        _fail(ex, f"the log-likelihood has shape {tuple(got.shape)}, expected (batch,) = (4,)")
    if not _close_t(got, want, 1e-10):
        if _close_t(got, -want, 1e-10):
            _fail(ex, "wrong sign: a log-likelihood of binary data is <= 0; F.binary_cross_entropy_with_logits is its "
                      "NEGATIVE")
        if _close_t(got, Bernoulli(probs=logits.clamp(1e-6, 1 - 1e-6)).log_prob(x).sum(-1), 1e-6):
            _fail(ex, "the decoder returns LOGITS, not probabilities: use Bernoulli(logits=...) or "
                      "binary_cross_entropy_with_logits")
        if _close_t(got, want / x.shape[-1], 1e-10):
            _fail(ex, "you averaged over pixels; the likelihood of an image is the SUM over its pixels")
        _fail(ex, f"differs from Bernoulli(logits=logits).log_prob(x).sum(-1) by "
                  f"{_rel(got.detach().numpy(), want.numpy()):.2g} (relative)")
    big = torch.tensor([[200.0, -200.0, 50.0]], dtype=torch.float64)
    xb = torch.tensor([[0.0, 1.0, 1.0]], dtype=torch.float64)
    got = _t(_call(ex, bernoulli_log_likelihood, big, xb), ex, "the log-likelihood")
    want = Bernoulli(logits=big).log_prob(xb).sum(-1)
    if not torch.isfinite(got).all() or not _close_t(got, want, 1e-8):
        _fail(ex, "large logits (+-200) give inf or wrong values: log(sigmoid(a)) underflows. Use "
                  "-F.binary_cross_entropy_with_logits(logits, x, reduction='none') or F.logsigmoid")
    _passed(ex, "matches torch.distributions.Bernoulli(logits=...).log_prob, also for logits of size 200")


def _ref_negative_elbo_deterministic(model: TinyVAE, x: torch.Tensor) -> torch.Tensor:
    mu, log_var = model.encode(x)
    log_px = Bernoulli(logits=model.decode(mu)).log_prob(x).sum(-1)
    return (-log_px + _ref_kl(mu, log_var)).mean()


@_keeps_rng
def check_vae_loss(vae_loss: Callable, seed: int = 0) -> None:
    """Exercise 2d: the VAE loss, minus the one-sample ELBO (eq. 3.30) averaged over the batch."""
    __tracebackhide__ = True
    ex = "2d"
    torch.manual_seed(seed)
    x = torch.bernoulli(torch.full((8, 12), 0.4))
    # (i) nearly deterministic encoder: the one-sample estimate equals the reference up to tiny noise.
    model = TinyVAE(log_var_shift=-40.0).double()
    with torch.no_grad():
        model.log_var.weight.zero_()
    got = _t(_call(ex, vae_loss, model, x.double()), ex, "the loss")
    if got.dim() != 0:
        _fail(ex, f"the loss has shape {tuple(got.shape)}; return one number: the MEAN over the batch of -ELBO(x)")
    with torch.no_grad():
        mu, log_var = model.encode(x.double())
        log_px = Bernoulli(logits=model.decode(mu)).log_prob(x.double()).sum(-1)
        kl = _ref_kl(mu, log_var)
        want = (-log_px + kl).mean()
        g = got.item()
        if abs(g - want.item()) > 1e-4 * abs(want.item()):
            if abs(g + want.item()) < 1e-4 * abs(want.item()):
                _fail(ex, "you returned the ELBO itself; the optimiser MINIMISES the loss, so return -ELBO = "
                          "-(log p(x|z) - KL)")
            if abs(g - (-log_px - kl).mean().item()) < 1e-4 * abs(want.item()):
                _fail(ex, "the KL term has the wrong sign: -ELBO = -log p(x|z) + KL(q(z|x) || p(z))")
            if abs(g - (-log_px + kl).sum().item()) < 1e-4 * abs(want.sum().item()):
                _fail(ex, "you summed over the batch; average instead (.mean()) so the learning rate does not depend "
                          "on the batch size")
            if abs(g - (-log_px).mean().item()) < 1e-4 * abs(want.item()):
                _fail(ex, "the KL term is missing: -ELBO = -log p(x|z) + KL(q(z|x) || p(z))")
            _fail(ex, f"loss {g:.4f} differs from the reference {want.item():.4f} (encoder with tiny variance, so "
                      f"z = mu); encode, sample z, decode, then -mean(log p(x|z) - KL)")
    # (ii) ordinary variance: unbiased on average and gradients reach the encoder's variance head.
    model = TinyVAE(log_var_shift=0.0).double()
    xb = x.double()
    losses = torch.stack([_call(ex, vae_loss, model, xb) for _ in range(300)])
    with torch.no_grad():
        mu, log_var = model.encode(xb)
        z = mu + (0.5 * log_var).exp() * torch.randn(4000, *mu.shape, dtype=mu.dtype)
        ref = (-Bernoulli(logits=model.decode(z)).log_prob(xb).sum(-1) + _ref_kl(mu, log_var)).mean(-1)
    diff = abs(losses.mean().item() - ref.mean().item())
    tol = 5 * math.sqrt(losses.var().item() / len(losses) + ref.var().item() / len(ref)) + 1e-6
    if losses.std().item() == 0:
        _fail(ex, "the loss is the same every time: draw fresh noise (reparameterised_sample(mu, log_var)) on each "
                  "call")
    if diff > tol:
        _fail(ex, f"on average your loss is {losses.mean().item():.3f}, but a Monte Carlo reference gives "
                  f"{ref.mean().item():.3f}: sample z ~ q(z|x) with the right standard deviation exp(log_var / 2)")
    # The KL term alone also sends gradients to the encoder; the reconstruction term must add its own share,
    # which it can only do through a reparameterised sample.
    model.zero_grad()
    loss = _call(ex, vae_loss, model, xb)
    loss.backward()
    mu_, log_var_ = model.encode(xb)
    kl_grads = torch.autograd.grad(_ref_kl(mu_, log_var_).mean(), [model.mu.weight, model.log_var.weight])
    for head, g_kl in zip((model.mu, model.log_var), kl_grads):
        if head.weight.grad is None or torch.allclose(head.weight.grad, g_kl, atol=1e-10):
            _fail(ex, "the reconstruction term sends no gradient to the encoder: sample z with your "
                      "reparameterised_sample (or rsample), not with .sample(), torch.normal or under torch.no_grad()")
    _passed(ex, "exact for a nearly deterministic encoder, unbiased otherwise, and gradients reach the encoder")


# ----------------------------------------------------------------------------------------------------------------------
# Lab 3: the M2 bounds (thesis eqs. 4.7-4.11; reproduction notes rn-m2, G14)
# ----------------------------------------------------------------------------------------------------------------------

class TinyM2(nn.Module):
    """A small M2 with ``classify(x) -> logits of q(y|x)``, ``encode(x, y) -> (mu, log_var)`` of ``q(z|x,y)`` and
    ``decode(z, y) -> logits of p(x|y,z)`` (Bernoulli); ``y`` is one-hot. ``encode_calls`` counts encoder passes."""

    def __init__(self, x_dim: int = 10, n_classes: int = 3, z_dim: int = 2, hidden: int = 16,
                 log_var_shift: float = 0.0):
        super().__init__()
        self.x_dim, self.n_classes, self.z_dim = x_dim, n_classes, z_dim
        self.cls = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, n_classes))
        self.enc = nn.Sequential(nn.Linear(x_dim + n_classes, hidden), nn.Tanh())
        self.mu, self.log_var = nn.Linear(hidden, z_dim), nn.Linear(hidden, z_dim)
        self.dec = nn.Sequential(nn.Linear(z_dim + n_classes, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))
        self.log_var_shift = log_var_shift
        self.encode_calls = 0

    def classify(self, x):
        return self.cls(x)

    def encode(self, x, y):
        self.encode_calls += 1
        h = self.enc(torch.cat([x, y.to(x.dtype)], -1))  # accept one-hot labels of any dtype
        return self.mu(h), self.log_var(h) + self.log_var_shift

    def decode(self, z, y):
        return self.dec(torch.cat([z, y.to(z.dtype)], -1))


class _HandM2(nn.Module):
    """The hand-computable model of lab 3: one binary pixel, two classes, q(y|x) = (1/2, 1/2), q(z|x,y) = N(0, 1),
    and a decoder that ignores z with p(x=1|y=0) = 1/2, p(x=1|y=1) = 1/4."""

    n_classes, z_dim = 2, 1

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros((), dtype=torch.float64))  # so that model.parameters() is not empty
        self.encode_calls = 0

    def classify(self, x):
        return torch.zeros(len(x), 2, dtype=x.dtype)

    def encode(self, x, y):
        self.encode_calls += 1
        return torch.zeros(len(x), 1, dtype=x.dtype), torch.zeros(len(x), 1, dtype=x.dtype)

    def decode(self, z, y):
        logit = torch.tensor([0.0, math.log(1 / 3)], dtype=z.dtype)  # sigmoid: 1/2 and 1/4
        return (y.to(z.dtype) @ logit)[:, None] + 0 * z.sum(-1, keepdim=True)


HAND_U = -1.5 * math.log(2.0)
"""U(x = 1) of the hand-computable model: H = log 2, ELBO_l = -2 log 2 (y=0) and -3 log 2 (y=1)."""


def _deterministic_m2(seed: int) -> TinyM2:
    torch.manual_seed(seed)
    model = TinyM2(log_var_shift=-40.0).double()
    with torch.no_grad():
        model.log_var.weight.zero_()
    return model


def _ref_labelled(model, x, y):
    mu, log_var = model.encode(x, y)
    z = mu  # the checks use an encoder of (almost) zero variance, so z ~ q(z|x,y) is (almost) mu
    log_px = Bernoulli(logits=model.decode(z, y)).log_prob(x).sum(-1)
    return log_px - _ref_kl(mu, log_var) - math.log(model.n_classes), log_px, _ref_kl(mu, log_var)


def _ref_unlabelled_loop(model, x):
    """Brute force: one pass per class (the batched version must agree)."""
    q = torch.softmax(model.classify(x), -1)
    elbos = []
    for k in range(model.n_classes):
        y = F.one_hot(torch.full((len(x),), k), model.n_classes).to(x.dtype)
        elbos.append(_ref_labelled(model, x, y)[0])
    elbo = torch.stack(elbos, -1)  # (B, K)
    entropy = -(q * q.clamp_min(1e-30).log()).sum(-1)
    return (q * elbo).sum(-1) + entropy, q, elbo, entropy


def _data(seed: int, n: int, x_dim: int = 10):
    gen = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, x_dim), 0.3, dtype=torch.float64), generator=gen)


@_keeps_rng
def check_labelled_bound(labelled_bound: Callable, seed: int = 0) -> None:
    """Exercise 3a: ``ELBO_l(x, y) = E_q[log p(x|y,z)] - KL(q(z|x,y) || p(z)) + log p(y)`` (eq. 4.9), per point."""
    __tracebackhide__ = True
    ex = "3a"
    model = _deterministic_m2(seed)
    x = _data(seed, 6)
    y = F.one_hot(torch.arange(6) % 3, 3).double()
    got = _t(_call(ex, labelled_bound, model, x, y), ex, "ELBO_l")
    if got.shape != (6,):
        _fail(ex, f"ELBO_l has shape {tuple(got.shape)}, expected (batch,) = (6,): one bound per data point "
                  f"(sum over pixels and latent units, not over the batch)")
    with torch.no_grad():
        want, log_px, kl = _ref_labelled(model, x, y)
    if not _close_t(got, want, 1e-6):
        log_k = math.log(3)
        if _close_t(got, want + log_k, 1e-6):
            _fail(ex, f"the log p(y) term is missing: with a uniform prior over K = 3 classes it is -log K = "
                      f"{-log_k:.4f} for every point (the thesis' eq. 4.9 leaves it out; we keep it to get nats right)")
        if _close_t(got, log_px + kl - log_k, 1e-6):
            _fail(ex, "the KL term has the wrong sign: ELBO_l = log p(x|y,z) - KL(q(z|x,y) || p(z)) + log p(y)")
        if _close_t(got, -want, 1e-6):
            _fail(ex, "you returned the negative bound; labelled_bound returns the bound itself (it is <= 0 here)")
        _fail(ex, f"ELBO_l differs from the reference by {_rel(got.detach().numpy(), want.numpy()):.2g} (relative); "
                  f"encode (x, y), sample z with rsample, decode (z, y), then log p(x|y,z) - KL + log p(y)")
    hand = _call(ex, labelled_bound, _HandM2(), torch.ones(2, 1, dtype=torch.float64),
                 torch.eye(2, dtype=torch.float64))
    want_hand = torch.tensor([-2 * math.log(2), -3 * math.log(2)], dtype=torch.float64)
    if not _close_t(hand, want_hand, 1e-9):
        _fail(ex, f"on the hand-computable model ELBO_l should be (-2 log 2, -3 log 2) = (-1.386, -2.079), got "
                  f"{hand.detach().numpy().round(3)}")
    _passed(ex, "matches the reference on a random model and the hand-computed values (-2 log 2, -3 log 2)")


@_keeps_rng
def check_unlabelled_bound(unlabelled_bound: Callable, seed: int = 0) -> None:
    """Exercise 3b: ``U(x)`` (eqs. 4.7-4.8), all classes at once, checked against a per-class loop."""
    __tracebackhide__ = True
    ex = "3b"
    for trial in range(2):
        model = _deterministic_m2(seed + trial)
        x = _data(seed + 10 + trial, 5)
        model.encode_calls = 0
        got = _t(_call(ex, unlabelled_bound, model, x), ex, "U(x)")
        calls = model.encode_calls
        if got.shape != (5,):
            _fail(ex, f"U(x) has shape {tuple(got.shape)}, expected (batch,) = (5,): sum over classes, keep the batch")
        with torch.no_grad():
            want, q, elbo, entropy = _ref_unlabelled_loop(model, x)
        if not _close_t(got, want, 1e-6):
            cands = {
                "the entropy term H[q(y|x)] is missing: U(x) = sum_y q(y|x) ELBO_l(x, y) + H[q(y|x)]":
                    want - entropy,
                "the entropy has the wrong sign: H[q(y|x)] = -sum_y q(y|x) log q(y|x) is >= 0 and is ADDED":
                    want - 2 * entropy,
                "the class terms are not weighted by q(y|x): U(x) = sum_y q(y|x) ELBO_l(x, y) + H[q(y|x)]":
                    elbo.sum(-1) + entropy,
                "you averaged the class terms instead of weighting them by q(y|x)": elbo.mean(-1) + entropy,
                "the batch and class axes got mixed up when you reshaped the tiled result: if you tiled with "
                "x.repeat(K, 1), row k * B + b belongs to class k and point b, so reshape to (K, B) and transpose":
                    (q * elbo.t().reshape(elbo.shape)).sum(-1) + entropy,
            }
            for advice, value in cands.items():
                if _close_t(got, value, 1e-6):
                    _fail(ex, advice)
            _fail(ex, f"U(x) differs from a brute-force loop over the classes by "
                      f"{_rel(got.detach().numpy(), want.numpy()):.2g} (relative); tile x K times, pair each copy with "
                      f"one one-hot label, call labelled_bound once, reshape to (batch, K), weight by q(y|x), "
                      f"add the entropy")
        if calls != 1:
            _fail(ex, f"the values are right, but the encoder ran {calls} times for one batch: sum over the classes "
                      f"as ONE batched operation (tile the batch K times with one-hot labels and call labelled_bound "
                      f"once) instead of a Python loop over classes")
    _passed(ex, "matches a per-class loop, in a single batched pass over all classes")


@_keeps_rng
def check_hand_computed_case(unlabelled_bound: Callable) -> float:
    """Exercise 3b on the hand-computable model: ``U(x=1) = -1.5 log 2``. Returns the student's value."""
    __tracebackhide__ = True
    ex = "3b"
    got = _t(_call(ex, unlabelled_bound, _HandM2(), torch.ones(1, 1, dtype=torch.float64)), ex, "U(x)")
    value = float(got.reshape(-1)[0])
    if abs(value - HAND_U) > 1e-9:
        _fail(ex, f"on the hand-computable model U(x) should be H + (1/2)(-2 log 2) + (1/2)(-3 log 2) = "
                  f"log 2 - 2.5 log 2 = -1.5 log 2 = {HAND_U:.4f}, got {value:.4f}")
    _passed(ex, f"U(x) = {value:.4f} = -1.5 log 2 on the hand-computable model")
    return value


@_keeps_rng
def check_m2_loss(m2_loss: Callable, seed: int = 0) -> None:
    """Exercise 3c: ``loss = -( mean_l[ELBO_l - alpha CE] + mean_u[U] )`` (eqs. 4.10-4.11; reproduction notes G9)."""
    __tracebackhide__ = True
    ex = "3c"
    model = _deterministic_m2(seed)
    x_l, x_u = _data(seed + 1, 6), _data(seed + 2, 5)
    y_l = torch.arange(6) % 3
    alpha = 7.0
    got = _t(_call(ex, m2_loss, model, x_l, y_l, x_u, alpha), ex, "the loss")
    if got.dim() != 0:
        _fail(ex, f"the loss has shape {tuple(got.shape)}; return one number (means over the two batches)")
    with torch.no_grad():
        yl1h = F.one_hot(y_l, 3).double()
        elbo_l = _ref_labelled(model, x_l, yl1h)[0].mean()
        ce = F.cross_entropy(model.classify(x_l), y_l)
        u = _ref_unlabelled_loop(model, x_u)[0].mean()
        want = -(elbo_l - alpha * ce + u)
    g = got.item()
    if abs(g - want.item()) > 1e-6 * abs(want.item()):
        cands = {
            "the classification term is missing: J = ELBO_l - alpha * CE(y, q(y|x)) (eq. 4.10)": -(elbo_l + u),
            "the cross-entropy has the wrong sign: the loss ADDS alpha * CE": -(elbo_l + alpha * ce + u),
            "alpha is missing in front of the cross-entropy": -(elbo_l - ce + u),
            "you returned the bound, not the loss: loss = -(J + U)": elbo_l - alpha * ce + u,
            "the unlabelled bound U(x_u) is missing: L = J(x_l, y_l) + U(x_u) (eq. 4.11)": -(elbo_l - alpha * ce),
        }
        for advice, value in cands.items():
            if abs(g - value.item()) < 1e-6 * max(1.0, abs(value.item())):
                _fail(ex, advice)
        _fail(ex, f"loss {g:.4f} differs from the reference {want.item():.4f} = -(mean ELBO_l(x_l, y_l) - alpha * "
                  f"mean CE + mean U(x_u))")
    _passed(ex, "matches -(mean_l[ELBO_l - alpha CE] + mean_u[U])")


@_keeps_rng
def check_alpha(alpha_weight: Callable) -> None:
    """Exercise 3d: ``alpha = beta * N / N_l`` (A eq. after (12); reproduction notes G9)."""
    __tracebackhide__ = True
    ex = "3d"
    for beta, n_total, n_l in [(0.1, 60000, 100), (1.0, 1000, 10), (0.5, 10000, 6)]:
        got = float(_call(ex, alpha_weight, beta, n_total, n_l))
        want = beta * n_total / n_l
        if abs(got - want) > 1e-9 * want:
            if abs(got - beta * (n_total - n_l) / n_l) < 1e-9 * want:
                _fail(ex, "use all N training points (labelled + unlabelled) in the numerator: alpha = beta * N / N_l")
            if abs(got - beta * n_l / n_total) < 1e-12:
                _fail(ex, "the ratio is upside down: alpha = beta * N / N_l grows when labels are scarce")
            _fail(ex, f"alpha(beta={beta}, N={n_total}, N_l={n_l}) should be {want:g}, got {got:g}")
    _passed(ex, "alpha = beta * N / N_l (60 for MNIST with 100 labels and beta = 0.1)")


# ----------------------------------------------------------------------------------------------------------------------
# Lab 4: the ladder VAE, its precision-weighted merge and KL warm-up (thesis eqs. 5.1-5.5; Sønderby et al. 2016,
# eqs. 16-20; reproduction notes rn-warmup)
# ----------------------------------------------------------------------------------------------------------------------

__all__ += ["check_precision_weighted_merge", "check_temperature", "check_temperature_schedule", "check_warmup_loss",
            "check_top_down", "TinyLVAE"]


def _merge_inputs(seed: int, shape=(3, 4)):
    """Means in [-3, 3] and variances in [0.2, 5], drawn so that the two variances of a unit clearly differ."""
    gen = torch.Generator().manual_seed(seed)
    mu_q = 6 * torch.rand(shape, generator=gen, dtype=torch.float64) - 3
    mu_p = 6 * torch.rand(shape, generator=gen, dtype=torch.float64) - 3
    var_q = torch.exp(math.log(0.2) + math.log(25) * torch.rand(shape, generator=gen, dtype=torch.float64))
    var_p = var_q * torch.where(torch.rand(shape, generator=gen) < 0.5, 1 / 4.0, 4.0).double()
    return mu_q, var_q, mu_p, var_p.clamp(0.2, 5.0) + 0.05


def _grid_product_moments(mu1: float, var1: float, mu2: float, var2: float, n: int = 400_001) -> tuple[float, float]:
    """Mean and variance of the normalised product ``N(z; mu1, var1) N(z; mu2, var2) / Z``, computed numerically
    (Riemann sums on a fine grid, in log space) without using the closed form."""
    sd = math.sqrt(max(var1, var2))
    z = np.linspace(min(mu1, mu2) - 12 * sd, max(mu1, mu2) + 12 * sd, n)
    log_f = -0.5 * (z - mu1) ** 2 / var1 - 0.5 * (z - mu2) ** 2 / var2  # constants cancel in the normalisation
    w = np.exp(log_f - log_f.max())
    w /= w.sum()
    mean = float(np.sum(w * z))
    return mean, float(np.sum(w * (z - mean) ** 2))


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest elementwise relative difference (scaled by max(|b|, 1e-3))."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float(((a - b).abs() / b.abs().clamp_min(1e-3)).max())


@_keeps_rng
def check_precision_weighted_merge(precision_weighted_merge: Callable, seed: int = 0) -> None:
    """Exercise 4a: ``var = 1 / (1/var_q + 1/var_p)``, ``mu = (mu_q/var_q + mu_p/var_p) * var`` (eqs. 5.3-5.4),
    compared with the moments of the normalised product of the two densities computed on a grid."""
    __tracebackhide__ = True
    ex = "4a"
    mu_q, var_q, mu_p, var_p = _merge_inputs(seed)
    out = _call(ex, precision_weighted_merge, mu_q.clone(), var_q.clone(), mu_p.clone(), var_p.clone())
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        _fail(ex, f"return a pair (mu, var), got {type(out).__name__}")
    mu = _t(out[0], ex, "the merged mean")
    var = _t(out[1], ex, "the merged variance")
    for name, value in (("the merged mean", mu), ("the merged variance", var)):
        if value.shape != mu_q.shape:
            _fail(ex, f"{name} has shape {tuple(value.shape)}, expected {tuple(mu_q.shape)}: the merge works unit by "
                      f"unit (elementwise), with no sums or means over any axis")
    # The reference: the normalised product of the two densities, unit by unit, on a grid.
    grid = [_grid_product_moments(*(float(t.reshape(-1)[k]) for t in (mu_q, var_q, mu_p, var_p)))
            for k in range(mu_q.numel())]
    want_mu = torch.tensor([g[0] for g in grid], dtype=torch.float64).reshape(mu_q.shape)
    want_var = torch.tensor([g[1] for g in grid], dtype=torch.float64).reshape(mu_q.shape)
    tol, exact = 1e-6, 1e-9
    exact_var = 1 / (1 / var_q + 1 / var_p)
    if _max_rel(var, want_var) > tol:
        cands = {
            "you added the variances. Multiplying two Gaussian densities adds their PRECISIONS (inverse variances): "
            "1/var = 1/var_q + 1/var_p, so the merged variance is smaller than either input (two sources of "
            "information about z are more certain than one)": var_q + var_p,
            "you returned the standard deviation; return the variance var = 1 / (1/var_q + 1/var_p) itself (take the "
            "square root only when you sample)": exact_var.sqrt(),
            "you returned the log-variance; return the variance var = 1 / (1/var_q + 1/var_p) itself": exact_var.log(),
            "you returned the precision 1/var_q + 1/var_p; the merged variance is its inverse": 1 / exact_var,
            "var_q and var_p are already variances (the thesis' eq. 5.4 writes sigma for them), so their precisions "
            "are 1/var_q and 1/var_p, not 1/var_q^2 and 1/var_p^2": 1 / (1 / var_q ** 2 + 1 / var_p ** 2),
            "you averaged the two variances; the precisions add instead: var = 1 / (1/var_q + 1/var_p)":
                (var_q + var_p) / 2,
        }
        for advice, value in cands.items():
            if _max_rel(var, value) < exact:
                _fail(ex, advice)
        _fail(ex, f"the merged variance differs from the variance of the normalised product of the two densities "
                  f"(computed on a grid) by up to {_max_rel(var, want_var):.2g} (relative); "
                  f"var = 1 / (1/var_q + 1/var_p)")
    if _max_rel(mu, want_mu) > tol:
        cands = {
            "you averaged the two means with equal weights. Weight each mean by its own precision, "
            "mu = (mu_q/var_q + mu_p/var_p) * var: the more certain of the two (smaller variance) pulls harder":
                (mu_q + mu_p) / 2,
            "the weights are swapped: each mean was weighted by the OTHER term's precision (the same as weighting it "
            "by its own variance), so the less certain term wins. Use mu = (mu_q/var_q + mu_p/var_p) * var":
                (mu_q / var_p + mu_p / var_q) / (1 / var_q + 1 / var_p),
            "the precision-weighted sum of the means must be normalised: multiply mu_q/var_q + mu_p/var_p by the "
            "merged variance var (that is, divide by 1/var_q + 1/var_p)": mu_q / var_q + mu_p / var_p,
            "you weighted the means by 1/sigma; the weights are the precisions 1/sigma^2 = 1/var":
                (mu_q / var_q.sqrt() + mu_p / var_p.sqrt()) / (1 / var_q.sqrt() + 1 / var_p.sqrt()),
            "you added the variances inside the mean: mu = (mu_q/var_q + mu_p/var_p) * var with the MERGED variance "
            "var = 1 / (1/var_q + 1/var_p)": (mu_q / var_q + mu_p / var_p) * (var_q + var_p),
        }
        for advice, value in cands.items():
            if _max_rel(mu, value) < exact:
                _fail(ex, advice)
        _fail(ex, f"the merged mean differs from the mean of the normalised product of the two densities (computed on "
                  f"a grid) by up to {_max_rel(mu, want_mu):.2g} (relative); mu = (mu_q/var_q + mu_p/var_p) * var")
    # Broadcasting: one prior shared by a batch, as when a layer's prior is a constant.
    mu_b, var_b = _call(ex, precision_weighted_merge, mu_q, var_q, mu_p[:1], var_p[:1])
    if tuple(mu_b.shape) != tuple(mu_q.shape) or _max_rel(var_b, 1 / (1 / var_q + 1 / var_p[:1])) > exact:
        _fail(ex, "with a prior of shape (1, d) and a likelihood term of shape (batch, d) the result should broadcast "
                  "to (batch, d); use elementwise tensor operations only")
    _passed(ex, f"mean and variance match the normalised product of the two densities, computed on a grid, for "
                f"{mu_q.numel()} pairs of Gaussians (relative error < {tol:g})")


def _ref_temperature(epoch: int, warmup_epochs: int) -> float:
    return 1.0 if warmup_epochs == 0 else min(1.0, epoch / warmup_epochs)


def _call_temperature(ex: str, temperature: Callable, epoch: int, warmup_epochs: int) -> float:
    __tracebackhide__ = True
    try:
        value = _call(ex, temperature, epoch, warmup_epochs)
    except ZeroDivisionError:
        _fail(ex, f"temperature({epoch}, {warmup_epochs}) divided by zero: warmup_epochs = 0 means that warm-up is "
                  f"switched off, so return 1.0 (the full bound) before dividing by warmup_epochs")
    arr = _np(value, ex, f"temperature({epoch}, {warmup_epochs})")
    if arr.size != 1:
        _fail(ex, f"temperature(epoch, warmup_epochs) should return one number, got shape {arr.shape}")
    return float(arr.reshape(()))


@_keeps_rng
def check_temperature(temperature: Callable) -> None:
    """Exercise 4b: the warm-up temperature ``T = min(1, epoch / N)`` with epochs counted from 0; ``N = 0``: ``T = 1``
    (thesis eq. 5.5; Sønderby et al. section 2.3; reproduction notes rn-warmup)."""
    __tracebackhide__ = True
    ex = "4b"
    for n in (4, 10, 1, 200):
        epochs = list(range(n + 4)) if n <= 10 else [0, 1, 50, 100, 199, 200, 201, 400]
        got = [_call_temperature(ex, temperature, e, n) for e in epochs]
        want = [_ref_temperature(e, n) for e in epochs]
        if np.allclose(got, want, rtol=0, atol=1e-12):
            continue
        table = ", ".join(f"T({e}) = {g:g}" for e, g in list(zip(epochs, got))[:7])
        cands = {
            "the temperature keeps growing after warm-up: clamp it at 1, T = min(1, epoch / warmup_epochs) (a "
            "temperature above 1 would weigh the KL terms more than the bound does)": [e / n for e in epochs],
            "off by one: epochs count from 0, and the first epoch runs at T = 0 (a plain auto-encoder); use "
            "T = min(1, epoch / warmup_epochs), which reaches 1 at epoch warmup_epochs":
                [min(1.0, (e + 1) / n) for e in epochs],
            "off by one and not clamped: T = min(1, epoch / warmup_epochs), starting at 0 in epoch 0":
                [(e + 1) / n for e in epochs],
            "off by one: T reaches 1 one epoch too early; divide by warmup_epochs, not warmup_epochs - 1":
                [min(1.0, e / (n - 1)) if n > 1 else 1.0 for e in epochs],
            "off by one: T reaches 1 one epoch too late; divide by warmup_epochs, not warmup_epochs + 1":
                [min(1.0, e / (n + 1)) for e in epochs],
            "the schedule runs backwards: T rises from 0 to 1 (the KL terms are switched ON gradually)":
                [max(0.0, 1 - e / n) for e in epochs],
            "integer division: epoch // warmup_epochs jumps from 0 to 1; use true division, epoch / warmup_epochs":
                [min(1, e // n) for e in epochs],
        }
        for advice, value in cands.items():
            if np.allclose(got, value, rtol=0, atol=1e-12):
                _fail(ex, f"{advice} (warmup_epochs = {n}: {table}, ...)")
        _fail(ex, f"with warmup_epochs = {n} the temperatures should be {[round(w, 4) for w in want[:7]]} for epochs "
                  f"{epochs[:7]}, got {[round(g, 4) for g in got[:7]]}; T = min(1, epoch / warmup_epochs)")
    for e in (0, 3, 1000):
        got = _call_temperature(ex, temperature, e, 0)
        if got != 1.0:
            _fail(ex, f"temperature({e}, 0) = {got:g}: warmup_epochs = 0 means that warm-up is off, so the bound is "
                      f"used in full from the start, T = 1")
    _passed(ex, "T = min(1, epoch / N) from T = 0 in epoch 0, and T = 1 when warm-up is off (N = 0)")


@_keeps_rng
def check_temperature_schedule(temperatures_for_run: Callable) -> None:
    """Exercise 4b: the temperature of every gradient step of a run, constant within an epoch."""
    __tracebackhide__ = True
    ex = "4b"
    for n_epochs, steps, n in ((7, 5, 4), (3, 4, 0), (4, 30, 2)):
        out = _call(ex, temperatures_for_run, n_epochs, steps, n)
        got = _np(list(out) if not isinstance(out, torch.Tensor) else out, ex, "the temperatures").reshape(-1)
        if len(got) != n_epochs * steps:
            _fail(ex, f"temperatures_for_run({n_epochs}, {steps}, {n}) returned {len(got)} values; return one "
                      f"temperature per gradient step, n_epochs * steps_per_epoch = {n_epochs * steps} in all")
        want = np.array([_ref_temperature(e, n) for e in range(n_epochs) for _ in range(steps)])
        if np.allclose(got, want, rtol=0, atol=1e-12):
            continue
        per_epoch = got.reshape(n_epochs, steps)
        if np.any(np.ptp(per_epoch, axis=1) > 1e-12):
            e = int(np.argmax(np.ptp(per_epoch, axis=1) > 1e-12))
            _fail(ex, f"the temperature changes within epoch {e} ({per_epoch[e, 0]:g} ... {per_epoch[e, -1]:g}): "
                      f"it advanced per batch (gradient step). Warm-up here is per epoch: compute the epoch of each "
                      f"step (step // steps_per_epoch) and use temperature(epoch, warmup_epochs) for every step of "
                      f"that epoch")
        _fail(ex, f"with {n_epochs} epochs of {steps} steps and warmup_epochs = {n} the per-epoch temperatures should "
                  f"be {want[::steps].round(4).tolist()}, got {per_epoch[:, 0].round(4).tolist()}; make check 4b "
                  f"pass first, then use temperature(epoch, warmup_epochs) for every step of each epoch")
    _passed(ex, "one temperature per step, constant within each epoch")


def _warmup_terms(seed: int, batch: int = 6):
    gen = torch.Generator().manual_seed(seed)
    log_px = -100 + 10 * torch.randn(batch, generator=gen, dtype=torch.float64)
    kl1 = 20 + 3 * torch.rand(batch, generator=gen, dtype=torch.float64)
    kl2 = 5 + torch.rand(batch, generator=gen, dtype=torch.float64)
    return log_px, kl1, kl2


@_keeps_rng
def check_warmup_loss(warmup_loss: Callable, seed: int = 0) -> None:
    """Exercise 4c: ``loss = -mean(log p(x|z1) - T * (KL_1 + KL_2))`` (thesis eq. 5.5): the temperature multiplies the
    KL terms of every layer and never the reconstruction term."""
    __tracebackhide__ = True
    ex = "4c"
    log_px, kl1, kl2 = _warmup_terms(seed)
    for t in (0.25, 0.0, 1.0, 0.6):
        got = _t(_call(ex, warmup_loss, log_px.clone(), [kl1.clone(), kl2.clone()], t), ex, "the loss")
        if got.numel() != 1:
            _fail(ex, f"the loss has shape {tuple(got.shape)}; return one number, the mean over the batch")
        g = float(got)
        want = -(log_px - t * (kl1 + kl2)).mean()
        if abs(g - want.item()) < 1e-6 * abs(want.item()):  # float32 rounding passes, every mistake below fails
            continue
        k = kl1 + kl2
        cands = {
            "the temperature multiplies the reconstruction term log p(x|z1). It belongs on the KL terms only: "
            "loss = -mean(log p(x|z1) - T * (KL_1 + KL_2)); at T = 0 the model is then a plain auto-encoder that "
            "still learns to reconstruct": -(t * log_px - k).mean(),
            "the temperature multiplies the reconstruction term as well as the KL terms, that is, the whole loss. "
            "That only rescales the gradient (at T = 0 nothing is learnt at all); warm-up changes the balance between "
            "the two parts: loss = -mean(log p(x|z1) - T * (KL_1 + KL_2))": -t * (log_px - k).mean(),
            "the temperature multiplies only the KL of z1; it multiplies the KL terms of every layer, z2 included":
                -(log_px - t * kl1 - kl2).mean(),
            "the temperature multiplies only the KL of z2; it multiplies the KL terms of every layer, z1 included":
                -(log_px - kl1 - t * kl2).mean(),
            "the KL of z2 is missing: sum the KL terms of all layers, KL_1 + KL_2": -(log_px - t * kl1).mean(),
            "the KL of z1 is missing: sum the KL terms of all layers, KL_1 + KL_2": -(log_px - t * kl2).mean(),
            "the temperature is 1 - T: T itself multiplies the KL terms (T rises from 0 to 1 during warm-up)":
                -(log_px - (1 - t) * k).mean(),
            "you returned the bound; the optimiser minimises, so the loss is its negative": (log_px - t * k).mean(),
            "the KL terms have the wrong sign: the bound is log p(x|z1) MINUS T times the KL terms":
                -(log_px + t * k).mean(),
            "you summed over the batch; average instead (.mean()) so that the learning rate does not depend on the "
            "batch size": -(log_px - t * k).sum(),
        }
        for advice, value in cands.items():
            if abs(g - value.item()) < 1e-6 * max(1.0, abs(value.item())):
                _fail(ex, f"{advice} (checked at T = {t:g})")
        _fail(ex, f"at T = {t:g} the loss should be {want.item():.4f} = -mean(log p(x|z1) - T * (KL_1 + KL_2)), got "
                  f"{g:.4f}")
    # gradients: d loss / d log p(x|z1) = -1/B whatever T, d loss / d KL_i = T / B
    lp, k1, k2 = (v.clone().requires_grad_(True) for v in (log_px, kl1, kl2))
    loss = _t(_call(ex, warmup_loss, lp, [k1, k2], 0.25), ex, "the loss")
    if not loss.requires_grad:
        _fail(ex, "the loss does not depend differentiably on its inputs: use torch operations, no .item() or NumPy")
    loss.backward()
    b = len(log_px)
    if lp.grad is None or not torch.allclose(lp.grad, torch.full_like(lp, -1 / b)) or k1.grad is None \
            or not torch.allclose(k1.grad, torch.full_like(k1, 0.25 / b)):
        _fail(ex, "the loss has the right value but the wrong gradients: build it from the input tensors with torch "
                  "operations, loss = -(log_px - T * (kl_1 + kl_2)).mean()")
    _passed(ex, "T multiplies the KL terms of both layers and never log p(x|z1) (checked at T = 0, 0.25, 0.6 and 1)")


class TinyLVAE(nn.Module):
    """A two-layer ladder VAE with the interface of lab 4:

    * ``bottom_up(x) -> [(mu_hat1, var_hat1), (mu_hat2, var_hat2)]``: the bottom-up Gaussian likelihood terms of
      ``z1`` and ``z2`` (Sønderby et al. eqs. 13-15);
    * ``prior_z1(z2) -> (mu_p1, var_p1)``: the generative prior ``p(z1|z2)``;
    * ``decode(z1) -> logits`` of ``p(x|z1)`` (Bernoulli).

    ``prior_inputs`` records (a copy of) the argument of every ``prior_z1`` call, so that a check can tell which
    ``z2`` the prior was computed from."""

    def __init__(self, x_dim: int = 10, z_dims: tuple[int, int] = (3, 2), hidden: int = 16):
        super().__init__()
        self.z_dims = tuple(z_dims)
        self.up1 = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh())
        self.up2 = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self.hat1, self.hat2 = nn.Linear(hidden, 2 * z_dims[0]), nn.Linear(hidden, 2 * z_dims[1])
        self.prior = nn.Sequential(nn.Linear(z_dims[1], hidden), nn.Tanh(), nn.Linear(hidden, 2 * z_dims[0]))
        self.dec = nn.Sequential(nn.Linear(z_dims[0], hidden), nn.Tanh(), nn.Linear(hidden, x_dim))
        self.prior_inputs: list[torch.Tensor] = []

    @staticmethod
    def _gaussian(out: torch.Tensor):
        mu, s = out.chunk(2, -1)
        return mu, F.softplus(s) + 1e-3

    def bottom_up(self, x):
        d1 = self.up1(x)
        d2 = self.up2(d1)
        return [self._gaussian(self.hat1(d1)), self._gaussian(self.hat2(d2))]

    def prior_z1(self, z2):
        self.prior_inputs.append(z2.detach().clone())
        return self._gaussian(self.prior(z2))

    def decode(self, z1):
        return self.dec(z1)


def _kl_normal(mu_q, var_q, mu_p, var_p) -> torch.Tensor:
    """Per-unit ``KL(N(mu_q, var_q) || N(mu_p, var_p))`` via torch.distributions."""
    return kl_divergence(Normal(mu_q, var_q.sqrt()), Normal(mu_p, var_p.sqrt()))


def _ref_top_down(model: TinyLVAE, x: torch.Tensor, eps1: torch.Tensor, eps2: torch.Tensor) -> dict:
    with torch.no_grad():
        (mh1, vh1), (mh2, vh2) = model.bottom_up(x)
        z2 = mh2 + vh2.sqrt() * eps2
        mp1, vp1 = model._gaussian(model.prior(z2))  # not through prior_z1, which records its inputs
        vq1 = 1 / (1 / vh1 + 1 / vp1)
        mq1 = (mh1 / vh1 + mp1 / vp1) * vq1
        z1 = mq1 + vq1.sqrt() * eps1
        zeros, ones = torch.zeros_like(mh2), torch.ones_like(vh2)
        return {"z1": z1, "z2": z2, "q1": (mq1, vq1), "p1": (mp1, vp1), "q2": (mh2, vh2), "hat1": (mh1, vh1),
                "kl1": _kl_normal(mq1, vq1, mp1, vp1).sum(-1), "kl2": _kl_normal(mh2, vh2, zeros, ones).sum(-1),
                "prior_at": lambda z: model._gaussian(model.prior(z))}


@_keeps_rng
def check_top_down(top_down: Callable, seed: int = 0) -> None:
    """Exercise 4d: the top-down inference pass of a two-layer ladder VAE (thesis eqs. 5.1-5.4; Sønderby et al.
    eqs. 16-19): ``z2 ~ q(z2|x) = N(mu_hat2, var_hat2)``, the prior ``p(z1|z2)`` at that SAMPLED ``z2``, merged with the
    bottom-up term of ``z1``, ``z1 ~ q(z1|z2, x)``, and one KL term per layer."""
    __tracebackhide__ = True
    ex = "4d"
    torch.manual_seed(seed)
    model = TinyLVAE().double()
    gen = torch.Generator().manual_seed(seed)
    x = torch.bernoulli(torch.full((5, 10), 0.4, dtype=torch.float64), generator=gen)
    eps1 = torch.randn(5, model.z_dims[0], generator=gen, dtype=torch.float64)
    eps2 = torch.randn(5, model.z_dims[1], generator=gen, dtype=torch.float64)
    ref = _ref_top_down(model, x, eps1, eps2)
    model.prior_inputs.clear()
    out = _call(ex, top_down, model, x.clone(), (eps1.clone(), eps2.clone()))
    keys = ("z1", "z2", "q1", "p1", "q2", "kl1", "kl2")
    if not isinstance(out, dict) or any(k not in out for k in keys):
        _fail(ex, f"top_down must return the dict of the template with the keys {list(keys)}; keep its return line")
    mh2, vh2 = ref["q2"]
    mh1, vh1 = ref["hat1"]
    # 1. the top layer: z2 ~ q(z2|x) = N(mu_hat2, var_hat2), reparameterised with eps2
    z2 = out["z2"]
    if not _same(z2, ref["z2"]):
        if _same(z2, mh2 + vh2 * eps2):
            _fail(ex, "z2 was drawn with the variance as the standard deviation: z2 = mu_hat2 + sqrt(var_hat2) * eps2")
        if _same(z2, eps2):
            _fail(ex, "z2 is a draw from the prior p(z2) = N(0, I); in the inference pass the top layer is drawn from "
                      "q(z2|x) = N(mu_hat2, var_hat2): z2 = mu_hat2 + sqrt(var_hat2) * eps2")
        if _same(z2, mh2):
            _fail(ex, "z2 is the bottom-up mean; draw a sample, z2 = mu_hat2 + sqrt(var_hat2) * eps2")
        _fail(ex, "z2 should be the sample mu_hat2 + sqrt(var_hat2) * eps2 of q(z2|x) = N(mu_hat2, var_hat2), "
                  "with the eps2 given")
    # 2. the prior of z1 must be computed at the sampled z2 (the parent from the inference top-down pass)
    mp1, vp1 = ref["p1"]
    p1 = out["p1"]
    if not (isinstance(p1, (tuple, list)) and len(p1) == 2 and _same(p1[0], mp1) and _same(p1[1], vp1)):
        inputs = model.prior_inputs
        if not inputs:
            _fail(ex, "model.prior_z1 was never called: the prior p(z1|z2) comes from the generative network, "
                      "mu_p1, var_p1 = model.prior_z1(z2), at the z2 you just sampled")
        if any(_same(z, mh2) for z in inputs):
            _fail(ex, "wrong parent: the prior p(z1|z2) was computed at the bottom-up mean mu_hat2. In the ladder VAE "
                      "it is evaluated at the SAMPLED z2 of the top-down pass (q(z1|z2, x) conditions on that sample, "
                      "eq. 5.1), so that generation and inference share the top-down path: "
                      "mu_p1, var_p1 = model.prior_z1(z2)")
        if not any(_same(z, ref["z2"]) for z in inputs):
            _fail(ex, "wrong parent: the prior p(z1|z2) was computed at a z2 other than the one you sampled from "
                      "q(z2|x) (for example a fresh draw from p(z2) = N(0, I)). Inference conditions each layer on the "
                      "sample just drawn above it: mu_p1, var_p1 = model.prior_z1(z2) with the z2 you return")
        _fail(ex, "p1 should be the pair (mu_p1, var_p1) returned by model.prior_z1(z2) at the sampled z2")
    # 3. the merged posterior of z1
    mq1, vq1 = ref["q1"]
    q1 = out["q1"]
    if not (isinstance(q1, (tuple, list)) and len(q1) == 2 and _same(q1[0], mq1) and _same(q1[1], vq1)):
        if isinstance(q1, (tuple, list)) and len(q1) == 2 and _same(q1[0], mh1) and _same(q1[1], vh1):
            _fail(ex, "q1 is the bottom-up term alone; the posterior of z1 merges it with the prior: "
                      "mu_q1, var_q1 = precision_weighted_merge(mu_hat1, var_hat1, mu_p1, var_p1)")
        if isinstance(q1, (tuple, list)) and len(q1) == 2 and _same(q1[0], mp1) and _same(q1[1], vp1):
            _fail(ex, "q1 is the prior alone; the posterior of z1 merges it with the bottom-up term: "
                      "mu_q1, var_q1 = precision_weighted_merge(mu_hat1, var_hat1, mu_p1, var_p1)")
        _fail(ex, "q1 should be precision_weighted_merge(mu_hat1, var_hat1, mu_p1, var_p1); make check 4a pass first")
    # 4. the sample of z1 from the merged posterior
    z1 = out["z1"]
    if not _same(z1, ref["z1"]):
        if _same(z1, mh1 + vh1.sqrt() * eps1):
            _fail(ex, "z1 was drawn from the bottom-up term N(mu_hat1, var_hat1); draw it from the merged posterior, "
                      "z1 = mu_q1 + sqrt(var_q1) * eps1")
        if _same(z1, mp1 + vp1.sqrt() * eps1):
            _fail(ex, "z1 was drawn from the prior p(z1|z2); draw it from the merged posterior, "
                      "z1 = mu_q1 + sqrt(var_q1) * eps1")
        if _same(z1, mq1 + vq1 * eps1):
            _fail(ex, "z1 was drawn with the variance as the standard deviation: z1 = mu_q1 + sqrt(var_q1) * eps1")
        _fail(ex, "z1 should be the sample mu_q1 + sqrt(var_q1) * eps1 of the merged posterior, with the eps1 given")
    # 5. one KL term per layer, summed over the units of the layer
    zeros, ones = torch.zeros_like(mh2), torch.ones_like(vh2)
    for name, want, cands in (
        ("kl1", ref["kl1"], {
            "KL_1 compares q(z1|z2, x) with N(0, I); its prior is p(z1|z2) = N(mu_p1, var_p1) at the sampled z2":
                _kl_normal(mq1, vq1, torch.zeros_like(mq1), torch.ones_like(vq1)).sum(-1),
            "KL_1 uses the bottom-up term; use the merged posterior: KL(N(mu_q1, var_q1) || N(mu_p1, var_p1))":
                _kl_normal(mh1, vh1, mp1, vp1).sum(-1),
            "KL_1 is reversed: the bound uses KL(q || p) = KL(N(mu_q1, var_q1) || N(mu_p1, var_p1))":
                _kl_normal(mp1, vp1, mq1, vq1).sum(-1),
        }),
        ("kl2", ref["kl2"], {
            "KL_2 is reversed: the bound uses KL(q(z2|x) || p(z2)) with p(z2) = N(0, I)":
                _kl_normal(zeros, ones, mh2, vh2).sum(-1),
        }),
    ):
        got = out[name]
        if not isinstance(got, torch.Tensor):
            _fail(ex, f"{name} should be a torch.Tensor of shape (batch,), got {type(got).__name__}")
        if got.dim() == 2 and got.shape[0] == want.shape[0]:
            _fail(ex, f"{name} has shape {tuple(got.shape)}: sum the per-unit KL over the units of the layer "
                      f"(.sum(-1)), one number per data point")
        if tuple(got.shape) != tuple(want.shape):
            _fail(ex, f"{name} has shape {tuple(got.shape)}, expected (batch,) = {tuple(want.shape)}")
        if not _same(got, want):
            for advice, value in cands.items():
                if _same(got, value):
                    _fail(ex, advice)
            diff = _rel(got.detach().numpy(), want.numpy())
            _fail(ex, f"{name} differs from the analytic KL of the layer by {diff:.2g} (relative); "
                      f"KL_1 = KL(N(mu_q1, var_q1) || N(mu_p1, var_p1)), KL_2 = KL(N(mu_hat2, var_hat2) || N(0, I)), "
                      f"each summed over its units")
    # 6. gradients reach the top layer's bottom-up head through z2 and the prior network
    model.zero_grad()
    out = _call(ex, top_down, model, x.clone(), (eps1.clone(), eps2.clone()))
    out["z1"].sum().backward()
    if model.hat2.weight.grad is None or model.hat2.weight.grad.abs().max() == 0:
        _fail(ex, "z1 does not depend differentiably on z2: keep z2 = mu_hat2 + sqrt(var_hat2) * eps2 in the graph "
                  "(no .detach(), .sample() or torch.no_grad()) so that the top layer learns through the layers below")
    _passed(ex, "z2 from q(z2|x), the prior of z1 at the sampled z2, the precision-weighted posterior of z1 and one "
                "analytic KL per layer all match the reference")


# ----------------------------------------------------------------------------------------------------------------------
# Lab 5: the CaGeM unlabelled bound (thesis eqs. 4.24-4.27 and 4.30-4.32). The student assembles the bound and the
# cascade classifier from the per-cluster terms of ``dgmlab.cagem_lab.cagem_terms``; the checks compare with dgmlab's
# own CaGeM on the same random numbers and import dgmlab when they are called (the other labs' checks do not need it).
# ----------------------------------------------------------------------------------------------------------------------

__all__ += ["check_labelled_terms", "check_cagem_unlabelled_bound", "check_cascade_classifier"]

_CAGEM_TOL = 1e-7  # relative difference below which a student's table counts as equal to the reference


@torch.no_grad()
def _cagem_reference(model, x: torch.Tensor, noise: dict) -> dict[str, torch.Tensor]:
    """dgmlab's own numbers: the labelled bound for every cluster (one call per cluster, the same ``z1`` and the
    ``z2`` drawn for that cluster), the unlabelled bound (one batched call) and the cascade."""
    b, k = len(x), model.n_clusters
    per_class = [model.labelled_bound(x, torch.full((b,), c, dtype=torch.long),
                                      noise={"z1": noise["z1"], "z2": noise["z2"][:, c]}).value for c in range(k)]
    _, log_p = model.classifier_log_probs(x, 1, noise)
    return {"f": torch.stack(per_class, -1), "U": model.unlabelled_bound(x, noise=noise).value, "cascade": log_p[0]}


def _cagem_cases(seed: int, n_cases: int = 2, batch: int = 5):
    """``(model, x, noise, terms, reference)`` on tiny random CaGeMs (``dgmlab.cagem_lab.tiny_cagem``); ``batch``
    differs from the number of clusters (3), so that mixed-up axes show."""
    from dgmlab.cagem_lab import cagem_terms, draw_noise, tiny_cagem

    for i in range(n_cases):
        model = tiny_cagem(seed + i)
        gen = torch.Generator().manual_seed(100 + seed + i)
        x = torch.rand(batch, model.config.x_dim, generator=gen, dtype=torch.float64).bernoulli(generator=gen)
        noise = draw_noise(model, x, gen)
        yield model, x, noise, cagem_terms(model, x, noise), _cagem_reference(model, x, noise)


def _cagem_result(value, exercise: str, what: str) -> torch.Tensor:
    """A student's table as a detached float64 tensor (anything else fails the check)."""
    return _t(value, exercise, what, "on the tensors you were given").detach().double()


def _copy_terms(terms: dict) -> dict:
    """A fresh copy, so that a student function that changes its input in place cannot spoil the next comparison."""
    return {k: v.clone() for k, v in terms.items()}


@_keeps_rng
def check_labelled_terms(labelled_terms: Callable, seed: int = 0) -> None:
    """Exercise 5a: ``f(x, y) = log p(x|y,z1) + log p(z1|y,z2) + log p(y|z2) + log p(z2) - log q(z1|x)
    - log q(z2|x,y,z1)`` for every cluster ``y``, shape ``(B, K)``, checked against ``CaGeM.labelled_bound``."""
    __tracebackhide__ = True
    from dgmlab.cagem_lab import TERM_KEYS

    ex = "5a"
    for model, x, noise, t, ref in _cagem_cases(seed):
        b, k = ref["f"].shape
        try:
            out = _call(ex, labelled_terms, _copy_terms(t))
        except RuntimeError as err:
            if "must match the size" in str(err) or "shape" in str(err):
                _fail(ex, f"a shape mismatch ({err}). log_qz1 has shape (B,) = ({b},): one z1 per point, shared by "
                          f"all K clusters; the other terms are (B, K) = ({b}, {k}). Give log_qz1 a class axis to "
                          f"broadcast along: t['log_qz1'][:, None]")
            raise
        got = _cagem_result(out, ex, "labelled_terms(t)")
        if got.shape == (k, b):
            _fail(ex, f"the result has shape (K, B) = {tuple(got.shape)}; return (B, K) = ({b}, {k}), one row per "
                      f"point and one column per cluster, like the terms you were given")
        if got.shape != (b, k):
            _fail(ex, f"the result has shape {tuple(got.shape)}, expected (B, K) = ({b}, {k}): one value per point "
                      f"and cluster (do not sum over clusters or over the batch here)")
        if _same(got, ref["f"], _CAGEM_TOL):
            continue
        px, pz1, py, pz2, qz2 = (t[key] for key in TERM_KEYS)
        qz1 = t["log_qz1"][:, None]
        kl1, kl2 = qz1 - pz1, qz2 - pz2
        wrong = {
            "the KL term of z1 has the wrong sign: the bound SUBTRACTS log q(z1|x) - log p(z1|y,z2) (adds the log "
            "prior, subtracts the log posterior)": px + py + kl1 - kl2,
            "the KL term of z2 has the wrong sign: the bound SUBTRACTS log q(z2|x,y,z1) - log p(z2) (adds the log "
            "prior, subtracts the log posterior)": px + py - kl1 + kl2,
            "both KL terms have the wrong sign: f = log p(x|y,z1) + log p(y|z2) - [log q(z1|x) - log p(z1|y,z2)] - "
            "[log q(z2|x,y,z1) - log p(z2)]; every log q is subtracted, every log p added": px + py + kl1 + kl2,
            "log p(y|z2) is missing: in CaGeM the cluster prior is a learned network of z2, not a constant, and it is "
            "the term that ties z2 to the clusters": px - kl1 - kl2,
            "log q(z1|x) is missing: z1 is drawn from q(z1|x), so its log-density is subtracted (once per point, the "
            "same for every cluster)": px + py + pz1 - kl2,
            "log q(z2|x,y,z1) is missing: z2 is drawn from q(z2|x,y,z1), so its log-density is subtracted": px + py
            - kl1 + pz2,
            "you returned the negative of f (a loss); return the bound itself": -ref["f"],
        }
        for advice, value in wrong.items():
            if _same(got, value, _CAGEM_TOL):
                _fail(ex, advice)
        worst = (got - ref["f"]).abs().max().item()
        _fail(ex, f"f differs from CaGeM.labelled_bound by up to {worst:.3g} nats; f = log_px + log_pz1 + log_py + "
                  f"log_pz2 - log_qz1 - log_qz2 (log_qz1 broadcast over the clusters)")
    _passed(ex, "f(x, y) matches dgmlab's labelled bound for every cluster, on two random models")


def _entropy(log_q: torch.Tensor) -> torch.Tensor:
    return -(log_q.exp() * log_q).sum(-1)


@_keeps_rng
def check_cagem_unlabelled_bound(unlabelled_bound: Callable, seed: int = 0) -> None:
    """Exercise 5b: ``U(x) = sum_y q(y|z1,x) f(x, y) + H[q(y|z1,x)]`` with ``q = softmax(scores)`` over the
    clusters, shape ``(B,)``, checked against ``CaGeM.unlabelled_bound`` (one batched pass of the library)."""
    __tracebackhide__ = True
    ex = "5b"
    for model, x, noise, t, ref in _cagem_cases(seed):
        b, k = ref["f"].shape
        scores, f = t["scores"].clone(), ref["f"].clone()
        got = _cagem_result(_call(ex, unlabelled_bound, scores.clone(), f.clone()), ex,
                            "unlabelled_bound(scores, f)")
        if got.shape == (k,):
            _fail(ex, f"the result has shape {tuple(got.shape)} = (K,): you summed over the batch (axis 0). Sum over "
                      f"the clusters, the last axis, and keep one value per point: shape (B,) = ({b},)")
        if got.shape != (b,):
            _fail(ex, f"the result has shape {tuple(got.shape)}, expected (B,) = ({b},): one bound per point, the "
                      f"clusters summed out")
        if _same(got, ref["U"], _CAGEM_TOL):
            continue
        log_q = torch.log_softmax(scores, -1)
        q, h = log_q.exp(), _entropy(log_q)
        log_q0 = torch.log_softmax(scores, 0)
        q0, h0 = log_q0.exp(), _entropy(log_q0)
        wrong = {
            "the cluster terms are summed without the weights q(y|z1,x): U(x) = sum_y q(y|z1,x) f(x, y) + "
            "H[q(y|z1,x)]; each cluster counts as much as the classifier believes in it": [f.sum(-1) + h, f.sum(-1)],
            "you averaged the cluster terms (weights 1/K) instead of weighting them by q(y|z1,x) = softmax(scores)":
                [f.mean(-1) + h, f.mean(-1)],
            "the entropy term H[q(y|z1,x)] = -sum_y q log q is missing: it is the -log q(y|z1,x) of the ratio "
            "p/q, averaged over y": [(q * f).sum(-1)],
            "the entropy has the wrong sign: H[q] = -sum_y q(y) log q(y) >= 0 is ADDED to the weighted sum":
                [(q * f).sum(-1) - h],
            "you weighted the cluster terms by log q(y|z1,x) instead of q(y|z1,x): the weights are probabilities "
            "(softmax of the scores, summing to 1 over the clusters), log q only appears inside the entropy":
                [(log_q * f).sum(-1) + h, (log_q * f).sum(-1), (log_q * f).sum(-1) - h],
            "you used the raw scores as weights: turn them into probabilities first, q = softmax(scores) over the "
            "clusters (the last axis)": [(scores * f).sum(-1) + h, (scores * f).sum(-1) + _entropy(scores)],
            "q is normalised over the wrong axis: softmax over the batch (axis 0) makes each COLUMN sum to 1; the "
            "probabilities of one point must sum to 1 over its clusters, softmax(scores, dim=-1)":
                [(q0 * f).sum(-1) + h0, (q0 * f).sum(-1) + h],
            "you computed log sum_y exp f(x, y), the bound with y summed out exactly (as the importance-weighted "
            "estimate does); it is at least U(x). U(x) weights the terms by the classifier q(y|z1,x) and adds its "
            "entropy, which is what trains q": [torch.logsumexp(f, -1)],
            "you returned the negative bound (a loss); return U(x) itself": [-ref["U"]],
        }
        for advice, values in wrong.items():
            if any(_same(got, v, _CAGEM_TOL) for v in values):
                _fail(ex, advice)
        worst = (got - ref["U"]).abs().max().item()
        _fail(ex, f"U(x) differs from CaGeM.unlabelled_bound by up to {worst:.3g} nats; q = softmax(scores, -1), "
                  f"then (q * f).sum(-1) plus the entropy -(q * log q).sum(-1)")
    _passed(ex, "U(x) matches dgmlab's batched unlabelled bound (eq. 4.27) on two random models")


@_keeps_rng
def check_cascade_classifier(cascade_log_probs: Callable, seed: int = 0) -> None:
    """Exercise 5c: ``log p(y|x) ~ log sum_c q(c|z1,x) p(y|z2^c)`` (eqs. 4.30-4.32), shape ``(B, K)``, checked
    against ``CaGeM.classifier_log_probs``."""
    __tracebackhide__ = True
    ex = "5c"
    for model, x, noise, t, ref in _cagem_cases(seed):
        scores, table = t["scores"].clone(), t["log_p_y_given_z2"].clone()
        b, k = scores.shape
        want = ref["cascade"]
        got = _cagem_result(_call(ex, cascade_log_probs, scores.clone(), table.clone()), ex,
                            "cascade_log_probs(scores, log_p_y_given_z2)")
        if got.shape != (b, k):
            _fail(ex, f"the result has shape {tuple(got.shape)}, expected (B, K) = ({b}, {k}): for every point the "
                      f"log-probability of every class y (the clusters c are summed out)")
        if _same(got, want, _CAGEM_TOL):
            continue
        log_q = torch.log_softmax(scores, -1)
        log_q0 = torch.log_softmax(scores, 0)
        if torch.isnan(got).any():
            _fail(ex, "the result holds NaN: a log of a negative number? The weights are the probabilities "
                      "q(c|z1,x) (softmax of the scores), not log q; mixing log-probabilities with probabilities "
                      "gives negative sums")
        wrong = {
            "you returned probabilities; return log-probabilities, log p(y|x) (use torch.logsumexp over c)":
                [want.exp()],
            "the clusters c are averaged with equal weights 1/K: the cascade weights each p(y|z2^c) by how much "
            "q(c|z1,x) believes in cluster c": [torch.logsumexp(table, 1) - math.log(k), torch.logsumexp(table, 1)],
            "you summed over the wrong axis of log_p_y_given_z2: entry [b, c, y] is log p(y|z2^c), and the sum runs "
            "over c (axis 1), leaving y": [torch.logsumexp(log_q[:, None, :] + table, 2),
                                          torch.logsumexp(log_q[:, :, None] + table, 2)],
            "you weighted by log q(c|z1,x) instead of q(c|z1,x): the weights are probabilities; inside a "
            "logsumexp the log-weights are ADDED to the log-probabilities, log q(c) + log p(y|z2^c)":
                [(log_q[:, :, None] * table.exp()).sum(1), (log_q[:, :, None] * table).sum(1)],
            "you took only the most probable cluster c: the cascade sums over ALL clusters, weighted by q(c|z1,x)":
                [table[torch.arange(b), log_q.argmax(-1)]],
            "q is normalised over the wrong axis: softmax over the batch (axis 0); the probabilities of one point "
            "must sum to 1 over its clusters, softmax(scores, dim=-1)":
                [torch.logsumexp(log_q0[:, :, None] + table, 1)],
            "you multiplied log-probabilities instead of adding them: log(q p) = log q + log p":
                [torch.logsumexp(log_q[:, :, None] * table, 1)],
        }
        for advice, values in wrong.items():
            if any(_same(got, v, _CAGEM_TOL) for v in values):
                _fail(ex, advice)
        worst = (got - want).abs().max().item()
        _fail(ex, f"log p(y|x) differs from CaGeM.classifier_log_probs by up to {worst:.3g}; log q = "
                  f"log_softmax(scores, -1), then torch.logsumexp(log_q[:, :, None] + log_p_y_given_z2, dim=1)")
    _passed(ex, "the cascade matches dgmlab's p(y|x) (eqs. 4.30-4.32) on two random models")


# ----------------------------------------------------------------------------------------------------------------------
# Lab 6: anomaly detection with the bound (thesis section 6.2, experiment (iii), Fig. 6.3b; Maaløe et al., appendix D,
# section IV-C). The score of a minute is its unlabelled bound U(x); the rule flags a minute when U(x) < threshold.
# ----------------------------------------------------------------------------------------------------------------------

__all__ += ["check_flag", "check_false_alarms_and_misses", "check_threshold_from_training", "check_roc_auc"]


def _integer_scores(rng: np.random.Generator, n: int, loc: float = -8.0, scale: float = 5.0) -> np.ndarray:
    """Whole-nat scores, so that ties (between minutes, and with a threshold) are common."""
    return np.round(rng.normal(loc, scale, n))


def _scalar(value, ex: str, what: str) -> float:
    arr = _np(value, ex, what)
    if arr.size != 1:
        _fail(ex, f"{what} should be a single number, got an array of shape {arr.shape}")
    return float(arr.reshape(()))


def _count(stats: dict, key: str, ex: str) -> float:
    value = _scalar(stats[key], ex, f"result[{key!r}]")
    if key in ("false_alarms", "misses") and value != round(value):
        _fail(ex, f"result[{key!r}] = {value:g} is not a whole number; {key} is a COUNT of minutes (the rates go "
                  f"into the '_rate' entries)")
    return value


@_keeps_rng
def check_flag(flag: Callable, seed: int = 0) -> None:
    """Exercise 6a: ``flag(scores, threshold)``: the boolean mask of the minutes whose score is strictly below the
    threshold (a low bound means an unfamiliar minute; a score equal to the threshold is not flagged)."""
    __tracebackhide__ = True
    ex = "6a"
    rng = np.random.default_rng(seed)
    n = 25
    for trial in range(4):
        scores = _integer_scores(rng, n)
        ordered = np.sort(scores)
        # a threshold that some minutes score exactly (ties), except in the last trial
        threshold = float(ordered[6 + 4 * trial]) if trial < 3 else float(ordered[10]) + 0.5
        arg = scores.copy()
        out = _call(ex, flag, arg, threshold)
        if not np.array_equal(arg, scores):
            _fail(ex, "flag changed the array of scores it was given (sorted it in place?). Leave the input alone: "
                      "`scores < threshold` builds a new array, one entry per minute in the original order")
        if isinstance(out, tuple):
            _fail(ex, "flag returned a tuple, which is what np.where(condition) and np.nonzero give: the POSITIONS of "
                      "the flagged minutes. Return the boolean mask itself, `scores < threshold`, one True/False per "
                      "minute, so that later code can combine it with other masks (`mask & is_unseen`)")
        if isinstance(out, torch.Tensor):
            out = out.detach().cpu().numpy()
        out = np.asarray(out)
        want = scores < threshold
        numeric = out.dtype != bool and out.dtype.kind in "iuf"
        if numeric and (out.shape != want.shape or (out.size and not np.isin(out, (0, 1)).all())):
            if out.ndim == 1 and np.all(out == np.round(out)):
                _fail(ex, f"flag returned {out.size} whole numbers for {n} minutes: these look like the positions "
                          f"(indices) of the flagged minutes, e.g. from np.where or np.flatnonzero. Return a boolean "
                          f"mask with one entry per minute instead: `scores < threshold`")
        if out.shape != want.shape:
            _fail(ex, f"the mask has shape {out.shape}; it should have the shape of scores, {want.shape}: one "
                      f"True/False per minute")
        if numeric:
            same = np.array_equal(out.astype(bool), want)
            _fail(ex, ("the 0/1 values are right, but return booleans (`scores < threshold`, not .astype(int)): "
                       if same else "return a boolean mask (dtype bool), `scores < threshold`; ") +
                  "with integers, `~mask` gives -1 and -2 instead of False and True, and `mask & is_unseen` no "
                  "longer selects minutes")
        if out.dtype != bool:
            _fail(ex, f"flag should return a boolean NumPy array, got dtype {out.dtype}")
        if np.array_equal(out, want):
            continue
        where = f"(threshold {threshold:g}; scores {', '.join(f'{v:g}' for v in scores[:8])}, ...)"
        if np.array_equal(out, scores <= threshold):
            _fail(ex, f"minutes whose score EQUALS the threshold are flagged. The rule is strict, flag when "
                      f"U(x) < threshold (as in dgmlab.monitoring.threshold_rates), so use < and not <= {where}")
        if np.array_equal(out, scores > threshold) or np.array_equal(out, scores >= threshold):
            _fail(ex, f"the inequality is reversed: you flagged the minutes with HIGH scores. A high bound means the "
                      f"model finds the minute familiar; an unseen condition shows up as a LOW bound, so flag when "
                      f"scores < threshold {where}")
        _fail(ex, f"flag marked {int(out.sum())} of {n} minutes, expected {int(want.sum())} {where}; the mask should "
                  f"be True exactly where scores < threshold")
    _passed(ex, "a minute is flagged exactly when its score is below the threshold (ties not flagged), as a mask")


@_keeps_rng
def check_false_alarms_and_misses(false_alarms_and_misses: Callable, seed: int = 0) -> None:
    """Exercise 6b: counts and rates of "flag when the score is below the threshold". A false alarm is a flagged
    minute of a seen condition (rate over the seen minutes); a miss is an unflagged minute of an unseen condition
    (rate over the unseen minutes)."""
    __tracebackhide__ = True
    ex = "6b"
    keys = ("false_alarms", "false_alarm_rate", "misses", "miss_rate")
    rng = np.random.default_rng(seed)
    # a hand-made case in which every common mistake gives a different number: 30 seen minutes, 3 of them below the
    # threshold; 12 unseen minutes, 8 of them below it (4 misses)
    seen = -1.0 - 0.5 * np.arange(30)
    unseen = np.array([-3.0, -6.0, -9.0, -12.0, -20.0, -21.0, -22.0, -23.0, -24.0, -25.0, -26.0, -27.0])
    order = rng.permutation(42)
    cases = [(np.concatenate([seen, unseen])[order], np.repeat([False, True], [30, 12])[order], -14.2)]
    for n_seen, n_unseen in ((50, 20), (15, 40), (33, 33)):
        scores = np.concatenate([rng.normal(-4, 3, n_seen), rng.normal(-12, 8, n_unseen)])
        perm = rng.permutation(n_seen + n_unseen)
        cases.append((scores[perm], np.repeat([False, True], [n_seen, n_unseen])[perm],
                      float(rng.uniform(-9, -5))))
    for trial, (scores, is_unseen, threshold) in enumerate(cases):
        out = _call(ex, false_alarms_and_misses, scores.copy(), is_unseen.copy(), threshold)
        if not isinstance(out, dict) or any(k not in out for k in keys):
            _fail(ex, f"return the dict of the template with the keys {list(keys)}")
        fa, far, miss, mr = (_count(out, k, ex) if "rate" not in k else _scalar(out[k], ex, f"result[{k!r}]")
                             for k in keys)
        flagged, seen_mask = scores < threshold, ~is_unseen
        n, n_seen, n_unseen, n_flagged = len(scores), int(seen_mask.sum()), int(is_unseen.sum()), int(flagged.sum())
        w_fa, w_miss = int((flagged & seen_mask).sum()), int((~flagged & is_unseen).sum())
        w_far, w_mr = w_fa / n_seen, w_miss / n_unseen
        case = (f"(threshold {threshold:g}: {n_seen} seen minutes, {w_fa} of them flagged; {n_unseen} unseen "
                f"minutes, {n_unseen - w_miss} of them flagged)")
        if (fa, miss) != (w_fa, w_miss):
            if (fa, miss) == (w_miss, w_fa):
                _fail(ex, f"false alarms and misses are swapped: you returned {fa:g} false alarms and {miss:g} misses. "
                          f"A FALSE ALARM is a minute of a SEEN condition that is flagged (the alarm rings for "
                          f"nothing new); a MISS is a minute of an UNSEEN condition that is not flagged {case}")
            if (fa, miss) == ((flagged & is_unseen).sum(), (~flagged & seen_mask).sum()):
                _fail(ex, f"seen and unseen are mixed up: is_unseen is True for minutes of conditions the model has "
                          f"NOT seen. False alarms are flagged minutes with is_unseen False, misses unflagged minutes "
                          f"with is_unseen True {case}")
            if fa == (flagged & is_unseen).sum():
                _fail(ex, f"you counted the flagged UNSEEN minutes ({fa:g}) as false alarms; those are hits. A false "
                          f"alarm is a flagged minute of a SEEN condition: (flagged & ~is_unseen).sum() {case}")
            if fa == n_flagged:
                _fail(ex, f"false_alarms = {fa:g} is the number of ALL flagged minutes; count only those of seen "
                          f"conditions, (flagged & ~is_unseen).sum() {case}")
            if miss == n - n_flagged:
                _fail(ex, f"misses = {miss:g} is the number of ALL minutes that are not flagged; count only those of "
                          f"unseen conditions, (~flagged & is_unseen).sum() {case}")
            _fail(ex, f"expected {w_fa} false alarms and {w_miss} misses, got {fa:g} and {miss:g} {case}. If check 6a "
                      f"passes, use its mask: false alarms = (flagged & ~is_unseen).sum(), misses = "
                      f"(~flagged & is_unseen).sum()")
        for got, want, what, own, other, n_own, n_other, opposite in (
                (far, w_far, "false_alarm_rate", "seen", "unseen", n_seen, n_unseen, w_mr),
                (mr, w_mr, "miss_rate", "unseen", "seen", n_unseen, n_seen, w_far)):
            count = want * n_own
            if abs(got - want) < 1e-12:
                continue
            formula = f"{what} = {'false_alarms' if own == 'seen' else 'misses'} / (number of {own} minutes)"
            cands = {
                f"{what} is a count ({got:g}), not a rate: divide by the number of {own} minutes, {formula}": count,
                f"{what} was divided by ALL {n} minutes; a rate of {'false alarms' if own == 'seen' else 'misses'} "
                f"is over the {own} minutes only ({n_own} here), because only they can "
                f"{'raise a false alarm' if own == 'seen' else 'be missed'}: {formula}": count / n,
                f"{what} was divided by the number of {other} minutes ({n_other}); divide by the number of {own} "
                f"minutes ({n_own}): {formula}": count / n_other,
                f"{what} is a percentage ({got:g}); return a fraction between 0 and 1, {formula}": 100 * want,
                f"false_alarm_rate and miss_rate are swapped: the false-alarm rate is over the seen minutes, the miss "
                f"rate over the unseen ones": opposite,
            }
            if own == "seen":
                cands[f"false_alarm_rate was divided by the number of FLAGGED minutes ({n_flagged}); that is the "
                      f"share of alarms that are false, another quantity. The ROC curve needs {formula}"] = \
                    count / max(n_flagged, 1)
            else:
                cands[f"miss_rate is the HIT rate, the share of unseen minutes that ARE flagged; the miss rate is "
                      f"its complement, {formula}"] = 1 - want
                cands[f"miss_rate was divided by the number of minutes NOT flagged ({n - n_flagged}); {formula}"] = \
                    count / max(n - n_flagged, 1)
            for advice, value in cands.items():
                if abs(got - value) < 1e-12:
                    _fail(ex, f"{advice} {case}")
            _fail(ex, f"{what} should be {want:.4f}, got {got:.4f} {case}; {formula}")
    _passed(ex, "false alarms are counted among the seen minutes and misses among the unseen ones, each rate over "
                "its own group (one hand-made case and three random ones)")


def _code_names(code) -> set[str]:
    """Global and attribute names used by a code object and the functions, lambdas and comprehensions inside it."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _code_names(const)
    return names


def _quantile_band(sorted_scores: np.ndarray, q: float) -> tuple[float, float]:
    """Values that count as the q-quantile whatever the interpolation (from the order statistic just below the
    q (n - 1) position to the one just above it)."""
    n = len(sorted_scores)
    pos = min(max(q, 0.0), 1.0) * (n - 1)
    return (float(sorted_scores[max(int(np.floor(pos)) - 1, 0)]),
            float(sorted_scores[min(int(np.ceil(pos)) + 1, n - 1)]))


@_keeps_rng
def check_threshold_from_training(threshold_from_training: Callable, seed: int = 0) -> None:
    """Exercise 6c: the q-quantile of the TRAINING minutes' scores, so that about a share q of the known minutes
    would be flagged by "U(x) < threshold" (any usual interpolation between neighbouring order statistics passes)."""
    __tracebackhide__ = True
    ex = "6c"
    code = getattr(threshold_from_training, "__code__", None)
    leaks = sorted(name for name in (_code_names(code) if code is not None else ()) if "test" in name.lower())
    if leaks:
        _fail(ex, f"threshold_from_training uses {', '.join(f'`{name}`' for name in leaks)}, which looks like the "
                  f"scores of the test minutes. The threshold must come from the training minutes alone (the "
                  f"argument train_scores): the test minutes stand for the future, whose conditions the operator "
                  f"does not know, and a threshold tuned on them makes the test false-alarm rate look better than "
                  f"it will be")
    rng = np.random.default_rng(seed)
    values = []
    for n, q in ((1000, 0.01), (400, 0.05), (2500, 0.2)):
        scores = -1.0 - rng.gamma(2.0, 3.0, n)  # a long lower tail, like the bound of a trained model
        arg = scores.copy()
        value = _scalar(_call(ex, threshold_from_training, arg, q), ex, "the threshold")
        if not np.array_equal(arg, scores):
            _fail(ex, "threshold_from_training changed the array of training scores it was given (sorted it in "
                      "place with .sort()?). In the notebook that array is aligned with the training minutes; "
                      "np.quantile and np.sort return new arrays and leave their input alone")
        s = np.sort(scores)
        lo, hi = _quantile_band(s, q)
        values.append(value)
        if lo - 1e-9 <= value <= hi + 1e-9:
            continue
        share = float((scores < value).mean())
        case = (f"(q = {q:g}, {n} training scores from {s[0]:.1f} to {s[-1]:.1f} nats: your threshold {value:.3f} "
                f"would flag {100 * share:.1f} % of them)")

        def near(p, sign=1.0):
            a, b = _quantile_band(s, p)
            return a - 1e-9 <= sign * value <= b + 1e-9

        if near(1 - q):
            _fail(ex, f"you took the (1 - q)-quantile: it lies ABOVE almost all training scores, so "
                      f"\"U(x) < threshold\" flags a share 1 - q of the known minutes. Take the q-quantile, "
                      f"np.quantile(train_scores, q) {case}")
        if value > 0 and (near(q, -1.0) or near(1 - q, -1.0)):
            _fail(ex, f"the threshold is positive while every bound is negative: you worked with -U(x), the loss, "
                      f"where high values are unusual. The rule of this lab compares U(x) itself, \"flag when "
                      f"U(x) < threshold\", so take the q-quantile of the training scores as they are "
                      f"(np.quantile(train_scores, q)), without a minus sign {case}")
        if near(q / 100):
            _fail(ex, f"np.percentile takes a percentage: np.percentile(train_scores, q) with q = {q:g} is the "
                      f"{q:g} % point. Use np.quantile(train_scores, q) or np.percentile(train_scores, 100 * q) {case}")
        if value == s[0]:
            _fail(ex, f"you returned the lowest training score; with \"U(x) < threshold\" that flags no training "
                      f"minute at all. Take the q-quantile, np.quantile(train_scores, q) {case}")
        shifted = _scalar(_call(ex, threshold_from_training, scores - 100.0, q), ex, "the threshold")
        if shifted == value:
            _fail(ex, f"your threshold did not change when all training scores were lowered by 100 nats: the function "
                      f"ignores its argument (does it read a variable of the notebook instead?). Compute it from "
                      f"train_scores only {case}")
        _fail(ex, f"the threshold should be the {q:g}-quantile of the training scores, between {lo:.3f} and "
                  f"{hi:.3f}, so that a share q of them lies below it {case}")
    _passed(ex, "the threshold is the q-quantile of the training scores (q = 0.01, 0.05, 0.2), computed from the "
                "argument alone")


def _pairwise_auc(seen: np.ndarray, unseen: np.ndarray, tie: float = 0.5) -> float:
    lower = (unseen[:, None] < seen[None, :]).sum()
    ties = (unseen[:, None] == seen[None, :]).sum()
    return float((lower + tie * ties) / (len(seen) * len(unseen)))


@_keeps_rng
def check_roc_auc(roc_auc: Callable, seed: int = 0) -> None:
    """Exercise 6d: the area under the ROC curve of "flag when the score is below t", computed as the probability
    that a random unseen minute scores lower than a random seen one, ties counting half; compared with a count over
    all pairs."""
    __tracebackhide__ = True
    ex = "6d"
    rng = np.random.default_rng(seed)
    cases = [(_integer_scores(rng, 14, -5, 2), _integer_scores(rng, 9, -7, 3)),  # many ties
             (np.array([-4.0]), np.array([-4.0])),  # one pair, a tie: AUC = 1/2
             (_integer_scores(rng, 40, -3, 1), _integer_scores(rng, 25, -4, 1)),
             (rng.normal(-4, 2, 300), rng.normal(-9, 6, 200))]
    for seen, unseen in cases:
        args = (seen.copy(), unseen.copy())
        got = _scalar(_call(ex, roc_auc, *args), ex, "the AUC")
        if not (np.array_equal(args[0], seen) and np.array_equal(args[1], unseen)):
            _fail(ex, "roc_auc changed the arrays it was given (sorted them in place?); work on copies "
                      "(np.sort returns one)")
        want = _pairwise_auc(seen, unseen)
        if abs(got - want) < 1e-9:
            continue
        n_pairs = len(seen) * len(unseen)
        n_ties = int((unseen[:, None] == seen[None, :]).sum())
        case = (f"({len(seen)} seen and {len(unseen)} unseen scores, {n_ties} of the {n_pairs} pairs tied; the "
                f"count over all pairs gives {want:.4f})")
        cands = {
            "the AUC is flipped: you computed the probability that a SEEN minute scores lower than an unseen one, "
            "1 - AUC. The rule flags LOW scores, so the AUC is the probability that a random UNSEEN minute scores "
            "lower than a random seen one (check the order of the arguments, roc_auc(scores_seen, scores_unseen))":
                1 - want,
            "ties are ignored: a pair in which the unseen and the seen minute score the same counts HALF (the ROC "
            "curve crosses such a tie diagonally), not zero": _pairwise_auc(seen, unseen, tie=0.0),
            "ties count as a full win: a pair in which the unseen and the seen minute score the same counts HALF, "
            "not one (you used <= where < and a separate half count for == are needed)":
                _pairwise_auc(seen, unseen, tie=1.0),
            "the AUC is flipped and ties are ignored: count the pairs in which the UNSEEN minute scores lower, plus "
            "half of the tied pairs": 1 - _pairwise_auc(seen, unseen, tie=1.0),
            f"you returned the NUMBER of pairs, not the probability; divide by the {n_pairs} pairs "
            f"(len(scores_seen) * len(scores_unseen))": want * n_pairs,
            f"the count of pairs was divided by len(scores_seen) + len(scores_unseen); the number of pairs is the "
            f"product, {n_pairs}": want * n_pairs / (len(seen) + len(unseen)),
        }
        for advice, value in cands.items():
            if abs(got - value) < 1e-9 and abs(value - want) > 1e-9:
                _fail(ex, f"{advice} {case}")
        if not 0.0 <= got <= 1.0:
            _fail(ex, f"an AUC is a probability between 0 and 1, got {got:g} {case}")
        _fail(ex, f"the AUC should be {want:.4f}, got {got:.4f} {case}: count the pairs (unseen, seen) with "
                  f"unseen < seen, add half of the tied pairs and divide by the number of pairs")
    _passed(ex, "the AUC equals a count over all pairs (ties counting half), on four cases with and without ties")
