"""Run-time switches shared by the package, the book and the labs: device, seeds and the compute budget.

Three budgets (see the README): ``DGMLAB_FAST=1`` (CI: every notebook in well under a minute on 2 CPU cores),
the default (a reader's laptop CPU) and full paper-scale runs from the CLI.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random

import numpy as np
import torch


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


FAST: bool = _env_flag("DGMLAB_FAST")
"""True when ``DGMLAB_FAST=1``: notebooks and tests shrink every loop but still run every code path."""


def budget(fast, default):
    """Pick a value by budget: ``fast`` under ``DGMLAB_FAST=1``, ``default`` otherwise.

    Example: ``epochs = budget(fast=2, default=50)``.
    """
    return fast if FAST else default


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Choose the device once: ``cuda`` when available, else ``cpu``; an explicit choice is checked."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for but CUDA is not available here; use --device cpu")
    return dev


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch, and return a torch Generator (on the CPU) seeded the same way."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


@contextlib.contextmanager
def device_speed(device: str | torch.device):
    """Inside, on an accelerator, ``torch.distributions`` skips its argument checks: each check waits for the device
    (dozens of waits per training step), and the models' inputs are checked once at their own entry points. On the
    CPU nothing changes."""
    from torch.distributions import Distribution

    if torch.device(device).type == "cpu":
        yield
        return
    before = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(before)


def machine_description(device: torch.device | str | None = None) -> str:
    """A one-line description of the machine, recorded beside every published number."""
    dev = torch.device(device) if device is not None else get_device()
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = _cpu_model() or platform.processor() or platform.machine()
    return f"{dev.type}: {name}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""
