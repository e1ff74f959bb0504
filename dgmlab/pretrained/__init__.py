"""Checkpoints that we trained with the CLI and ship with their ``metrics.json`` (command, seed, time, machine).

Default-budget notebooks load them with :func:`load_pretrained`; FAST mode trains a few steps instead.
Each folder ``dgmlab/pretrained/NAME/`` holds ``model.pt`` and the ``metrics.json`` written by the run.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def available() -> list[str]:
    """Names of the shipped checkpoints."""
    return sorted(p.name for p in ROOT.iterdir() if (p / "model.pt").exists())


def path(name: str) -> Path:
    """Path of a shipped checkpoint's ``model.pt``."""
    p = ROOT / name / "model.pt"
    if not p.exists():
        raise FileNotFoundError(f"no shipped checkpoint {name!r}; available: {', '.join(available()) or 'none'}")
    return p


def metrics(name: str) -> dict:
    """The ``metrics.json`` that the training run of ``name`` wrote (and ``eval`` updated)."""
    return json.loads((path(name).parent / "metrics.json").read_text())


def run_group(name: str) -> dict[str, dict]:
    """The ``metrics.json`` files of a group of runs shipped without weights, ``dgmlab/pretrained/NAME/*.json``
    (e.g. ``halfmoons-seeds``: one file per model and seed), keyed by file stem."""
    folder = ROOT / name
    files = sorted(folder.glob("*.json"))
    if not files:
        raise FileNotFoundError(f"no shipped run group {name!r} (no JSON files in {folder})")
    return {f.stem: json.loads(f.read_text()) for f in files}


def load_pretrained(name: str, expect: str | None = None, device=None):
    """Load a shipped checkpoint as a model in eval mode (``weights_only=True``)."""
    from dgmlab.checkpoints import load_model

    return load_model(path(name), expect=expect, device=device)


def export_run(run_dir: str | Path, name: str, half: bool = True, into: str | Path | None = None) -> Path:
    """Copy a CLI run (``run_dir/model.pt`` + ``metrics.json``) into ``dgmlab/pretrained/name/``, dropping the
    optimiser and random-number states that only resuming needs (two thirds of the size with Adam).

    With ``half``, floating-point weights are stored as float16 (half the size again); ``load_model`` copies them
    back into the float32 parameters, which changes the outputs only in the fourth significant digit. ``into``
    writes the export to ``into/name/`` instead (e.g. to carry it off a machine before shipping it)."""
    import shutil

    from dgmlab.checkpoints import atomic_write_bytes, load_checkpoint

    import torch

    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir / "model.pt")
    state["optimizer"], state["rng"] = None, {}
    if half:
        state["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in state["state_dict"].items()}
    target = (Path(into) if into is not None else ROOT) / name
    target.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target / "model.pt", lambda f: torch.save(state, f))
    shutil.copyfile(run_dir / "metrics.json", target / "metrics.json.tmp")
    (target / "metrics.json.tmp").replace(target / "metrics.json")
    return target / "model.pt"
