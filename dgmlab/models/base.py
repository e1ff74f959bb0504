"""The contract between a model, the training loop, the CLI and the checkpoints.

Every model is a ``torch.nn.Module`` subclass of :class:`GenerativeModel` (or :class:`Classifier`) built from one
config dataclass. The training loop only ever calls:

* ``model.step(batch, epoch) -> Output``: the loss to minimise on one batch, with its named terms and metrics;
* ``model.evaluate(data, ...) -> dict``: test metrics (``test_error`` for classifiers, ``test_elbo`` for bounds);
* ``model.config`` (a dataclass) and ``type(model).name`` (the registry key), stored in every checkpoint.

A batch is a dict of tensors on the model's device. Keys by setting:
``{"x", "y"}`` supervised; ``{"x"}`` unsupervised; ``{"x_u", "x_l", "y_l"}`` semi-supervised
(the thesis' labelled-batch scheme, reproduction notes rn-semi-batches: every batch holds unlabelled points plus the
same labelled points).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class Output:
    """What one forward pass returns: the scalar ``loss`` to minimise, the named bound ``terms`` (tensors, averaged
    over the batch, in nats, natural sign) and ``metrics`` for logging (floats or detached 0-d tensors: the training
    loop sums tensors on the device and reads them once per epoch, so a step need not wait for the GPU)."""

    loss: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class Model(nn.Module):
    """Base class: subclasses set ``name`` (registry key), ``Config`` (a dataclass) and ``setting``
    (``"supervised"``, ``"unsupervised"`` or ``"semi-supervised"``: which batch keys ``step`` expects)."""

    name: ClassVar[str] = ""
    setting: ClassVar[str] = "unsupervised"
    Config: ClassVar[type]
    train_defaults: ClassVar[dict] = {}
    recipes: ClassVar[dict[str, dict]] = {}
    """Per dataset, the thesis' experiment: ``{"halfmoons": {"model": {...}, "train": {...}, "source": "..."}}``.
    ``python -m dgmlab train NAME --data DATA`` uses it without any ``--set``; ``python -m dgmlab list`` prints it."""

    @classmethod
    def recipe(cls, dataset: str) -> tuple[dict, dict]:
        """``(model options, training options)`` of the thesis' recipe for ``dataset``: the model's training
        defaults, then what the dataset's experiment changes. Unknown datasets get the defaults alone."""
        r = cls.recipes.get(dataset, {})
        return dict(r.get("model", {})), {**cls.train_defaults, **r.get("train", {})}

    def __init__(self, config):
        super().__init__()
        self.config = config

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)

    def step(self, batch: dict[str, torch.Tensor], epoch: int) -> Output:  # pragma: no cover - interface
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor | None = None, batch_size: int = 1000) -> dict[str, float]:
        """Test metrics on ``(x, y)``; ``y`` is used by classifiers. Runs in eval mode, in batches."""
        raise NotImplementedError  # pragma: no cover - interface


def check_input(x: torch.Tensor, dim: int, what: str = "x") -> None:
    """Raise a clear error for inputs of the wrong dtype or shape."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{what} must be a floating-point tensor, got dtype {x.dtype}; convert with {what}.float()")
    if x.dim() < 2 or x.shape[-1] != dim:
        raise ValueError(f"{what} must have shape (batch, {dim}), got {tuple(x.shape)}; "
                         f"flatten images with {what}.view(len({what}), -1)")


def check_labels(y: torch.Tensor, n_classes: int, what: str = "y") -> None:
    """Raise a clear error for labels of the wrong dtype or out of range."""
    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of class indices, got {type(y).__name__}")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{what} must hold integer class indices (torch.long), got dtype {y.dtype}; "
                        f"use {what}.long() or argmax of one-hot labels")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"{what} holds labels outside 0..{n_classes - 1} (min {int(y.min())}, max {int(y.max())})")
