"""A multilayer-perceptron classifier (thesis eqs 2.1-2.3, 2.7, 2.11): the discriminative baseline of the book."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dgmlab import nn as dnn
from dgmlab.models import register
from dgmlab.models.base import Model, Output, check_input, check_labels


@dataclass
class MLPConfig:
    """``x_dim -> hidden -> n_classes`` with a softmax output; ``dropout`` after every hidden layer."""

    x_dim: int = 2
    n_classes: int = 2
    hidden: tuple[int, ...] = (100, 100)
    activation: str = "relu"
    dropout: float = 0.0


@register
class MLPClassifier(Model):
    """``q(y|x) = Cat(y | softmax(f(x)))`` trained by maximum likelihood (categorical cross-entropy, eq. 2.11)."""

    name = "mlp"
    setting = "supervised"
    Config = MLPConfig
    recipes = {"pv": {"model": {"hidden": (50, 50), "dropout": 0.5}, "train": {"epochs": 40, "lr": 1e-3},
                      "source": "thesis chapter 6 (appendix D section III-B): x -> 50 -> 50 -> softmax, ReLU, dropout "
                                "0.5; Adam 1e-3, batches of 100, 40 epochs of the full data (our choices, reproduction "
                                "notes rn-pv-recipe)"}}

    def __init__(self, config: MLPConfig):
        super().__init__(config)
        layers = []
        d = config.x_dim
        for h in config.hidden:
            layers += [torch.nn.Linear(d, h), dnn.activation(config.activation)]
            if config.dropout:
                layers.append(torch.nn.Dropout(config.dropout))
            d = h
        layers.append(torch.nn.Linear(d, config.n_classes))
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        check_input(x, self.config.x_dim)
        return self.net(x)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``q(y|x)``."""
        return self.forward(x).softmax(-1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted labels ``(B,)`` (the same rule as the semi-supervised models' ``predict``)."""
        return self.forward(x).argmax(-1)

    def step(self, batch, epoch) -> Output:
        x, y = batch["x"], batch["y"]
        check_labels(y, self.config.n_classes)
        logits = self.forward(x)
        loss = F.cross_entropy(logits, y)
        error = (logits.argmax(-1) != y).float().mean().detach() * 100
        return Output(loss, {"cross_entropy": loss.detach()}, {"error": error})

    @torch.no_grad()
    def evaluate(self, x, y=None, batch_size: int = 1000) -> dict[str, float]:
        if y is None:
            raise ValueError("the MLP classifier needs test labels y to report a test error")
        check_labels(y, self.config.n_classes)
        preds = torch.cat([self.forward(xb).argmax(-1) for xb in x.split(batch_size)])
        return {"test_error": (preds != y).float().mean().item() * 100}
