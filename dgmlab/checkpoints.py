"""Checkpoints: written atomically, read back with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors and primitives: ``{"format", "model", "config", "state_dict", "optimizer",
"epoch", "history", "rng", "train_config", "data"}``. ``load_model(path, expect="adgm")`` rebuilds the model from its
stored config and refuses a checkpoint of another model with a clear message.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = "dgmlab-checkpoint-1"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or belongs to another model."""


def atomic_write_bytes(path: str | Path, write) -> None:
    """Call ``write(fileobj)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as pretty JSON, atomically."""
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    atomic_write_bytes(path, lambda f: f.write(data))


def save_checkpoint(path: str | Path, model, optimizer=None, epoch: int = 0, history: list | None = None,
                    rng: dict | None = None, train_config: dict | None = None, data: dict | None = None) -> None:
    """Save everything needed to rebuild the model and resume its training, atomically."""
    state = {
        "format": FORMAT,
        "model": type(model).name,
        "config": model.config_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": int(epoch),
        "history": json.loads(json.dumps(history or [])),
        "rng": rng or {},
        "train_config": train_config or {},
        "data": data or {},
    }
    atomic_write_bytes(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, expect: str | None = None) -> dict:
    """Read a checkpoint dict with ``weights_only=True``; ``expect`` names the model it must hold."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; train one with `python -m dgmlab train MODEL --out DIR`")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign file: say so instead of a pickle traceback
        raise CheckpointError(f"{path} is not a readable dgmlab checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a dgmlab checkpoint (format {state.get('format') if isinstance(state, dict) else type(state).__name__!r})")
    if expect is not None and state["model"] != expect:
        raise CheckpointError(f"{path} holds a {state['model']!r} model, not {expect!r}; "
                              f"load it with expect={state['model']!r} or pick the right checkpoint")
    return state


LEGACY_DEFAULTS = {"batch_norm": False}
"""Values of options that were added after checkpoints had been written: a stored config without the key was
trained before the option existed, i.e. with the behaviour given here (the semi-supervised models had no batch
normalisation before it became their default)."""


def build_model(name: str, config: dict):
    """Instantiate a registered model from a stored config dict."""
    import dataclasses

    from dgmlab.models import get_model_class

    cls = get_model_class(name)
    names = {f.name for f in dataclasses.fields(cls.Config)}
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in names}
    cfg.update({k: v for k, v in LEGACY_DEFAULTS.items() if k in names and k not in config})
    return cls(cls.Config(**cfg))


def load_model(path: str | Path, expect: str | None = None, device: str | torch.device | None = None):
    """Rebuild a trained model from a checkpoint, in eval mode, on ``device`` (default: the chosen device)."""
    from dgmlab.runtime import get_device

    state = load_checkpoint(path, expect)
    model = build_model(state["model"], state["config"])
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(f"{path}: the weights do not fit a {state['model']!r} model built from the stored "
                              f"config ({first}); was it written by another version of dgmlab? Retrain it with "
                              "`python -m dgmlab train`") from err
    model.history = state.get("history", [])
    return model.to(get_device(device)).eval()
