"""The training loop: Adam, per-epoch metrics history, atomic checkpoints and exact resume.

``fit`` checkpoints after every epoch (model, optimiser, history and every random-number state), so a run that is
stopped and resumed from its checkpoint gives the same result as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from dgmlab.checkpoints import load_checkpoint, load_model, save_checkpoint
from dgmlab.data import DataBundle, iterate_batches, make_config
from dgmlab.runtime import device_speed, get_device, seed_everything


@dataclass
class TrainConfig:
    """How to train (the model's own hyper-parameters live in its config).

    Args:
        epochs: passes over the (unlabelled) training set.
        batch_size: unlabelled (or plain) examples per batch.
        labelled_batch_size: labelled examples added to each semi-supervised batch.
        lr: Adam learning rate; ``lr_decay`` multiplies it every ``lr_decay_every`` epochs, never below ``lr_floor``.
        seed: seeds the weights, the data order, the binarisation and the Monte Carlo samples.
        clip_grad_norm: clip the global gradient norm (None: off).
        clip_grad_value: then clip every gradient element to ``[-v, v]`` (None: off; the authors' code uses 1).
        weight_prior: add ``-log N(W | 0, I) / n_train`` for every weight matrix to the loss (the authors' code;
            False: off).
        eval_every: evaluate on the test set every this many epochs (and always after the last).
        max_batches: cap on batches per epoch (quick runs).
        resident: keep the training data on the model's device and cut, binarise and pick batches there (None:
            whenever the device is not the CPU; see ``dgmlab.data.iterate_batches``).
        time_limit_s: stop after the epoch during which this many seconds of wall clock have passed since ``fit``
            was called (evaluating that epoch); the checkpoint lets a later call continue (None: no limit).
        progress: tqdm progress bars (None: on unless ``DGMLAB_PROGRESS=0``).
    """

    epochs: int = 10
    batch_size: int = 100
    labelled_batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0
    clip_grad_norm: float | None = None
    clip_grad_value: float | None = None
    weight_prior: bool = False
    lr_decay: float = 1.0
    lr_decay_every: int = 0
    lr_floor: float = 0.0
    eval_every: int = 1
    eval_batch_size: int = 1000
    max_batches: int | None = None
    time_limit_s: float | None = None
    resident: bool | None = None
    progress: bool | None = None

    def lr_at(self, epoch: int) -> float:
        if self.lr_decay_every <= 0 or self.lr_decay == 1.0:
            return self.lr
        return max(self.lr * self.lr_decay ** (epoch // self.lr_decay_every), self.lr_floor)


def _progress_enabled(cfg: TrainConfig) -> bool:
    if cfg.progress is not None:
        return cfg.progress
    return os.environ.get("DGMLAB_PROGRESS", "1") not in {"0", "false", "no"}


def _rng_state(generator: torch.Generator) -> dict:
    state = {"data": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(generator: torch.Generator, state: dict) -> None:
    generator.set_state(state["data"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def evaluate(model, data: DataBundle, batch_size: int = 1000) -> dict[str, float]:
    """Test metrics of ``model`` on ``data`` (classifiers: ``test_error``; bounds: ``test_elbo``): floats, and lists
    of floats for per-unit values."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), device_speed(model.device):
        x = data.test_inputs().to(model.device)
        y = data.y_test.to(model.device)
        metrics = model.evaluate(x, y, batch_size=batch_size)
    model.train(was_training)
    return {k: [float(u) for u in v] if isinstance(v, (list, tuple)) else float(v) for k, v in metrics.items()}


def fit(model, data: DataBundle, cfg: TrainConfig, checkpoint: str | Path | None = None,
        on_epoch: Callable[[int, dict], None] | None = None, data_info: dict | None = None) -> list[dict]:
    """Train ``model`` on ``data``; returns the history (one dict per epoch, also kept as ``model.history``).

    With ``checkpoint``, the state is saved atomically after every epoch; if the file already exists (from an
    interrupted run of the same model) training resumes after its last epoch.
    """
    called = time.perf_counter()
    generator = seed_everything(cfg.seed)
    device = model.device
    # One fused kernel for the whole update on a GPU; the same algorithm and state as the default implementation.
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=torch.device(device).type == "cuda")
    history: list[dict] = []
    start = 0
    if checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, expect=type(model).name)
        model.load_state_dict(state["state_dict"])
        if state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        history, start = state["history"], state["epoch"]
        if state["rng"]:
            _set_rng_state(generator, state["rng"])
    elapsed = history[-1]["time_s"] if history else 0.0
    show = _progress_enabled(cfg)
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr_at(epoch)
        with device_speed(device):
            train = _train_epoch(model, data, cfg, optimizer, generator, epoch, device, show)
        record = {"epoch": epoch + 1, **train}
        out_of_time = cfg.time_limit_s is not None and time.perf_counter() - called >= cfg.time_limit_s
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs or out_of_time:
            record.update(evaluate(model, data, cfg.eval_batch_size))
        elapsed += time.perf_counter() - t0
        record["time_s"] = round(elapsed, 3)
        history.append(record)
        if not show:
            print(_summary(record), flush=True)
        if checkpoint is not None:
            save_checkpoint(checkpoint, model, optimizer, epoch + 1, history, _rng_state(generator),
                            asdict(cfg), data_info)
        model.history = history
        if on_epoch is not None:
            on_epoch(epoch + 1, record)
        if out_of_time:
            print(f"stopped after epoch {epoch + 1} of {cfg.epochs}: the time limit of {cfg.time_limit_s:g} s "
                  f"has passed; continue with --resume", flush=True)
            break
    model.history = history
    return history


def _train_epoch(model, data, cfg, optimizer, generator, epoch, device, show) -> dict:
    from tqdm.auto import tqdm

    model.train()
    batches = iterate_batches(data, model.setting, cfg.batch_size, generator, cfg.labelled_batch_size, device,
                              cfg.resident)
    n_batches = max(len(data.x_train) // cfg.batch_size, 1)
    if cfg.max_batches is not None:
        n_batches = min(n_batches, cfg.max_batches)
    totals: dict[str, float] = {}
    bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not show,
               file=sys.stdout, dynamic_ncols=True)
    # Sums stay on the device: one host sync per CHECK_EVERY batches rather than one per metric per batch.
    check_every = 1 if torch.device(device).type == "cpu" else CHECK_EVERY
    finite = torch.ones((), dtype=torch.bool, device=device)
    for i, batch in enumerate(batches):
        if i >= n_batches:
            break
        out = model.step(batch, epoch)
        loss = out.loss + (_weight_prior(model, len(data.x_train)) if cfg.weight_prior else 0.0)
        finite &= torch.isfinite(out.loss.detach())
        if (i + 1) % check_every == 0 or i + 1 == n_batches:
            if not finite:
                first = max(i + 2 - check_every, 1)
                where = f"batch {i + 1}" if first == i + 1 else f"batches {first}-{i + 1}"
                raise FloatingPointError(f"the loss became {out.loss.item()} at epoch {epoch + 1}, {where}; "
                                         f"lower the learning rate or set clip_grad_norm")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
        if cfg.clip_grad_value:
            torch.nn.utils.clip_grad_value_(model.parameters(), cfg.clip_grad_value)
        optimizer.step()
        _accumulate(totals, "train_loss", out.loss)
        for k, v in out.metrics.items():
            _accumulate(totals, f"train_{k}", v)
        bar.update(1)
        if show:
            bar.set_postfix(loss=f"{out.loss.item():.3f}", refresh=False)
    bar.close()
    return {k: float(v) / n_batches for k, v in totals.items()}


CHECK_EVERY = 50
"""On an accelerator, batches between two checks that the loss is finite (each check waits for the device)."""


def _accumulate(totals: dict, key: str, value) -> None:
    value = value.detach() if torch.is_tensor(value) else float(value)
    totals[key] = totals[key] + value if key in totals else value


def _weight_prior(model: torch.nn.Module, n_train: int) -> torch.Tensor:
    """``-sum_W log N(W | 0, I) / N`` without the constant: a Gaussian prior on every weight matrix, spread over
    the ``N`` training points as the per-batch loss is a per-point average."""
    squares = sum(p.pow(2).sum() for p in model.parameters() if p.dim() >= 2)
    return 0.5 * squares / n_train


def _summary(record: dict) -> str:
    parts = [f"epoch {record['epoch']:>3}"]
    for k, v in record.items():
        if k != "epoch" and isinstance(v, float) and math.isfinite(v):
            parts.append(f"{k} {v:.4g}")
    return "  ".join(parts)


def load_or_train(name: str, data: DataBundle, model_overrides: dict | None = None,
                  train_config: TrainConfig | None = None, path: str | Path | None = None,
                  device: str | torch.device | None = None):
    """Load a trained model from ``path`` if it holds at least ``train_config.epochs`` epochs; else train it
    (resuming from ``path`` when a shorter run is there) and save it. Returns ``(model, history)``."""
    from dgmlab.models import get_model_class

    cfg = train_config or TrainConfig()
    if path is not None and Path(path).exists():
        state = load_checkpoint(path, expect=name)
        if state["epoch"] >= cfg.epochs:
            model = load_model(path, expect=name, device=device)
            return model, model.history
    cls = get_model_class(name)
    seed_everything(cfg.seed)
    model = cls(make_config(cls.Config, data, **(model_overrides or {}))).to(get_device(device))
    history = fit(model, data, cfg, checkpoint=path)
    return model.eval(), history
