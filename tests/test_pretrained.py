"""The checkpoints shipped in ``dgmlab/pretrained/`` (chapter 3: ``vae-mnist``, ``vae2d-mnist``).

Each must load with ``weights_only=True``, stay small, carry a ``metrics.json`` that says how it was made (command,
seed, wall-clock time, machine), agree with that command, and reproduce its recorded test numbers when re-evaluated.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path

import pytest
import torch

from dgmlab import pretrained
from dgmlab.checkpoints import load_checkpoint
from dgmlab.models.vae import VAE

CH3 = ["vae-mnist", "vae2d-mnist"]
MAX_BYTES = 5 * 2**20
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train_pretrained_ch3.sh"


def _set_options(command: str) -> dict:
    """The ``--set KEY=VALUE`` options of a recorded ``python -m dgmlab train`` command."""
    import ast

    args = shlex.split(command)
    out = {}
    for flag, value in zip(args, args[1:]):
        if flag == "--set":
            key, raw = value.split("=", 1)
            out[key] = ast.literal_eval(raw)
    return out


def _flag(command: str, name: str) -> str | None:
    args = shlex.split(command)
    return args[args.index(name) + 1] if name in args else None


def _after_python(command: str) -> str:
    """``python -m dgmlab ...`` -> ``-m dgmlab ...`` (the script runs it with ``"$PYTHON"``)."""
    assert command.startswith("python -m dgmlab "), command
    return command[len("python"):]


def test_chapter3_checkpoints_are_shipped():
    assert set(CH3) <= set(pretrained.available())


@pytest.mark.parametrize("name", CH3)
def test_checkpoint_loads_weights_only_and_is_small(name):
    path = pretrained.path(name)
    assert path.stat().st_size < MAX_BYTES, f"{name}: keep shipped checkpoints under 5 MB"
    state = torch.load(path, map_location="cpu", weights_only=True)  # raises if anything but tensors/plain data
    assert state["model"] == "vae"
    assert all(v.dtype == torch.float32 for v in state["state_dict"].values() if v.is_floating_point())
    model = pretrained.load_pretrained(name, expect="vae", device="cpu")
    assert isinstance(model, VAE) and not model.training
    assert model.history and len(model.history) == state["epoch"]


@pytest.mark.parametrize("name", CH3)
def test_metrics_record_how_the_checkpoint_was_made(name):
    m = pretrained.metrics(name)
    for key in ("command", "seed", "wall_clock_s", "machine", "history", "final", "config"):
        assert key in m, f"{name}/metrics.json lacks {key!r}"
    assert m["command"].startswith("python -m dgmlab train vae --data mnist")
    assert isinstance(m["seed"], int) and m["wall_clock_s"] > 0 and m["machine"]
    state = load_checkpoint(pretrained.path(name), expect="vae")
    # the recorded command produced this checkpoint: its options, epochs and seed match the stored ones
    for key, value in _set_options(m["command"]).items():
        stored = state["config"][key]
        assert (tuple(stored) if isinstance(stored, list) else stored) == value, f"{name}: {key}"
    assert int(_flag(m["command"], "--epochs")) == state["epoch"] == len(m["history"])
    assert int(_flag(m["command"], "--seed") or 0) == m["seed"] == state["train_config"]["seed"]
    assert m["history"] == state["history"]
    # and the shell script that rebuilds the shipped checkpoints runs exactly that command
    script = SCRIPT.read_text()
    assert _after_python(m["command"]) in script, f"{SCRIPT.name} must hold the command that trained {name}"
    ev = m["eval"]
    for key in ("command", "seed", "wall_clock_s", "machine", "n_test", "iw"):
        assert key in ev, f"{name}/metrics.json eval record lacks {key!r}"
    assert _after_python(ev["command"]) in script
    assert ev["iw"] == 5000 and ev["test_log_likelihood_iw5000"] > m["final"]["test_elbo"]


def test_vae_mnist_beats_minus_100_nats():
    m = pretrained.metrics("vae-mnist")
    assert m["final"]["test_elbo"] > -100
    assert m["eval"]["test_log_likelihood_iw5000"] > m["final"]["test_elbo"]


@pytest.fixture(scope="module")
def test_images(mnist_available):
    from dgmlab.data import load_data

    # the binarised test set exactly as training evaluated it (fixed seed)
    return load_data("mnist").test_inputs()


@pytest.mark.parametrize("name", CH3)
def test_recorded_test_elbo_is_reproduced(name, test_images):
    """Re-evaluate L_1 on the test set: it must match the recorded final test ELBO up to Monte Carlo noise (one
    sample of z per image), and on a slice up to the standard error of a slice mean."""
    model = pretrained.load_pretrained(name, expect="vae", device="cpu")
    recorded = pretrained.metrics(name)["final"]["test_elbo"]
    torch.manual_seed(0)
    with torch.no_grad():
        elbo = torch.cat([model.elbo(xb)["elbo"] for xb in test_images.split(1000)])
    assert len(elbo) == 10_000
    assert abs(float(elbo.mean()) - recorded) < 0.3, (float(elbo.mean()), recorded)
    part = elbo[:2000]
    assert abs(float(part.mean()) - recorded) < 4 * float(part.std()) / math.sqrt(len(part)) + 0.3


def test_recorded_log_likelihood_is_reproduced(test_images):
    """L_500 on the first 100 of the images the recorded L_5000 was computed on: above their ELBO, and equal to the
    recorded value up to the standard error of a 100-image mean (plus the small L_5000 - L_500 difference)."""
    model = pretrained.load_pretrained("vae-mnist", expect="vae", device="cpu")
    ev = pretrained.metrics("vae-mnist")["eval"]
    x = test_images[:min(ev["n_test"], 100)]
    torch.manual_seed(0)
    with torch.no_grad():
        ll = model.log_likelihood(x, k=500)
        elbo = model.elbo(x)["elbo"]
    se = float(ll.std()) / math.sqrt(len(ll))
    assert float(ll.mean()) > float(elbo.mean())
    assert abs(float(ll.mean()) - ev["test_log_likelihood_iw5000"]) < 4 * se + 0.5, (float(ll.mean()), se)
