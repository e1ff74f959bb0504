"""``DataBundle``: one dataset ready for a model, and the batch iterators of the three settings.

``load_data(name, labels=..., seed=...)`` is the single entry point used by the CLI, the book and the tests.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Iterator

import torch

from dgmlab.data import halfmoons, mnist

DATASETS = {
    "halfmoons": "two half-moons; supervised (chapter 2) or, with --labels 6, the six fixed labelled points (chapter 4)",
    "mnist": "MNIST, dynamically binarised; --trim keeps the 444 pixels with std > 0.1 (thesis section 4.1)",
    "pv": "SIMULATED photovoltaic string (pvlib), 10 conditions of thesis Table 6.1; --inputs simple (I, V) or "
          "complex (all six sensors); --seed draws the 80/20 split and the labels (thesis chapter 6)",
}
ALL_LABELS = "all"
"""``labels=ALL_LABELS``: every training point is labelled (the fully supervised runs of a semi-supervised model)."""


@dataclass
class DataBundle:
    """A dataset ready for training: train and test tensors, the labelled subset and how to read the inputs.

    ``x_train`` holds intensities in [0, 1] for image data (binarised per batch when ``dynamic_binarization``).
    ``x_labelled``/``y_labelled`` is the labelled subset of the semi-supervised setting (``None`` otherwise).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    likelihood: str
    dynamic_binarization: bool = False
    image_shape: tuple[int, int] | None = None
    pixel_mask: torch.Tensor | None = None
    class_names: tuple[str, ...] | None = None
    feature_names: tuple[str, ...] | None = None
    x_labelled: torch.Tensor | None = None
    y_labelled: torch.Tensor | None = None
    test_seed: int = 0
    _x_test_fixed: torch.Tensor | None = field(default=None, repr=False)
    _resident: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def input_dim(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_labelled(self) -> int:
        return 0 if self.y_labelled is None else len(self.y_labelled)

    def model_kwargs(self) -> dict:
        """Fields a model config may take from the data (``make_config`` keeps those the config declares)."""
        return {"x_dim": self.input_dim, "n_classes": self.n_classes, "likelihood": self.likelihood,
                "n_train": len(self.x_train), "n_labelled": max(self.n_labelled, 1)}

    def test_inputs(self) -> torch.Tensor:
        """Test inputs as the model sees them: binarised once with a fixed seed for image data (reproduction notes
        G13)."""
        if not self.dynamic_binarization:
            return self.x_test
        if self._x_test_fixed is None:
            self._x_test_fixed = mnist.binarize(self.x_test, torch.Generator().manual_seed(self.test_seed))
        return self._x_test_fixed

    def labelled_only(self) -> "DataBundle":
        """The same data with the training set reduced to the labelled subset (for supervised baselines)."""
        if self.x_labelled is None:
            return self
        return dataclasses.replace(self, x_train=self.x_labelled, y_train=self.y_labelled)

    def prepare(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return mnist.binarize(x, generator) if self.dynamic_binarization else x

    def resident(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        """The training tensors (``x_train``, ``y_train`` and the labelled subset) on ``device``, copied once and
        kept, so that batches are cut and binarised there without a host-to-device copy per batch."""
        device = torch.device(device)
        key = str(device)
        if key not in self._resident:
            if self.dynamic_binarization and (self.x_train.min() < 0 or self.x_train.max() > 1):
                raise ValueError(f"{self.name}: binarised data must hold intensities in [0, 1]")
            names = ("x_train", "y_train", "x_labelled", "y_labelled")
            self._resident[key] = {n: getattr(self, n).to(device) for n in names if getattr(self, n) is not None}
        return self._resident[key]

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs back to images of ``image_shape`` (trimmed pixels restored as 0)."""
        if self.image_shape is None:
            raise ValueError(f"{self.name} is not an image dataset")
        return mnist.untrim(x, self.pixel_mask).reshape(*x.shape[:-1], *self.image_shape)


def make_config(config_cls, data: DataBundle, **overrides):
    """Build a model config from the data's fields that the config declares, then ``overrides``."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    kwargs = {k: v for k, v in data.model_kwargs().items() if k in names}
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"{config_cls.__name__} has no option(s) {sorted(unknown)}; options: {sorted(names)}")
    kwargs.update(overrides)
    return config_cls(**kwargs)


def balanced_subset(y: torch.Tensor, n_labels: int, n_classes: int, seed: int) -> torch.Tensor:
    """Indices of a class-balanced labelled subset: ``n_labels / n_classes`` random points of every class."""
    if not isinstance(n_labels, int) or n_labels <= 0:
        raise ValueError(f"the number of labels must be a positive integer, got {n_labels!r}")
    if n_labels % n_classes:
        raise ValueError(f"{n_labels} labels cannot be spread evenly over {n_classes} classes; "
                         f"use a multiple of {n_classes}")
    if n_labels > len(y):
        raise ValueError(f"{n_labels} labels asked for, but the training set holds only {len(y)} points")
    per_class = n_labels // n_classes
    gen = torch.Generator().manual_seed(seed)
    picks = []
    for c in range(n_classes):
        idx = torch.nonzero(y == c).flatten()
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} points, fewer than the {per_class} labels asked for")
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return torch.cat(picks).sort().values


def load_data(name: str, labels: int | str | None = None, seed: int = 0, trim: bool = False,
              n_train: int | None = None, n_test: int | None = None, inputs: str | None = None) -> DataBundle:
    """Load a dataset by name (see :data:`DATASETS`).

    Args:
        name: ``halfmoons``, ``mnist`` or ``pv``.
        labels: size of the class-balanced labelled subset (semi-supervised); ``"all"`` labels every training
            point (a semi-supervised model trained fully supervised); ``None`` for plain supervised data.
            For ``halfmoons`` only 6 is allowed: the six fixed points of the thesis' experiment.
        seed: seed of the labelled-subset draw (``pv``: also of the 80/20 train/test split, one Monte Carlo fold).
        trim: MNIST only: keep the 444 pixels with training std > 0.1.
        n_train, n_test: keep only the first points (for quick runs).
        inputs: ``pv`` only: ``"simple"`` (I, V; the default) or ``"complex"`` (all six sensors).
    """
    if labels is not None and labels != ALL_LABELS and (not isinstance(labels, int) or isinstance(labels, bool)):
        raise ValueError(f"labels must be a positive integer or 'all', got {labels!r}")
    if inputs is not None and name != "pv":
        raise ValueError(f"inputs= selects the sensors of the pv dataset; {name} has no such option (drop --inputs)")
    if name == "halfmoons":
        data = _halfmoons(labels)
    elif name == "mnist":
        data = _mnist(labels, seed, trim)
    elif name == "pv":
        data = _pv(labels, seed, inputs or "simple")
    else:
        raise ValueError(f"unknown dataset {name!r}; available datasets: {', '.join(sorted(DATASETS))}")
    if n_train is not None:
        data.x_train, data.y_train = data.x_train[:n_train], data.y_train[:n_train]
    if n_test is not None:
        data.x_test, data.y_test = data.x_test[:n_test], data.y_test[:n_test]
    return data


def _label(data: DataBundle, labels: int | str | None, seed: int) -> DataBundle:
    if labels == ALL_LABELS:
        data.x_labelled, data.y_labelled = data.x_train, data.y_train
    elif labels is not None:
        idx = balanced_subset(data.y_train, labels, data.n_classes, seed)
        data.x_labelled, data.y_labelled = data.x_train[idx], data.y_train[idx]
    return data


def _halfmoons(labels: int | None) -> DataBundle:
    if labels is None:
        xtr, ytr, xte, yte = halfmoons.supervised_moons()
        return DataBundle("halfmoons", xtr, ytr, xte, yte, n_classes=2, likelihood="gaussian")
    if labels == ALL_LABELS:
        xtr, ytr, xte, yte = halfmoons.supervised_moons()
        return _label(DataBundle("halfmoons", xtr, ytr, xte, yte, n_classes=2, likelihood="gaussian"), labels, 0)
    if labels != 6:
        raise ValueError(f"halfmoons supports --labels 6 (the six fixed labelled points of the thesis), got {labels}")
    xtr, ytr, xte, yte, xl, yl = halfmoons.semi_supervised_moons()
    return DataBundle("halfmoons", xtr, ytr, xte, yte, n_classes=2, likelihood="gaussian", x_labelled=xl, y_labelled=yl)


def _mnist(labels: int | None, seed: int, trim: bool) -> DataBundle:
    xtr, ytr, xte, yte = mnist.load_mnist_arrays()
    mask = mnist.trim_mask(xtr) if trim else None
    if mask is not None:
        xtr, xte = xtr[:, mask], xte[:, mask]
    data = DataBundle("mnist", xtr, ytr, xte, yte, n_classes=10, likelihood="bernoulli", dynamic_binarization=True,
                      image_shape=(28, 28), pixel_mask=mask)
    return _label(data, labels, seed)


def _pv(labels: int | str | None, seed: int, inputs: str) -> DataBundle:
    from dgmlab.data.pv import load_pv_arrays  # pvlib and pandas load only when the PV data is asked for

    # The simulated recording is one fixed "plant" (simulation seed 0); ``seed`` draws the Monte Carlo fold.
    s = load_pv_arrays(seed=0, inputs=inputs, split_seed=seed)
    data = DataBundle("pv", s.x_train, s.y_train, s.x_test, s.y_test, n_classes=len(s.classes), likelihood="gaussian",
                      class_names=tuple(s.classes), feature_names=tuple(s.sensors))
    return _label(data, labels, seed)


def iterate_batches(data: DataBundle, setting: str, batch_size: int, generator: torch.Generator,
                    labelled_batch_size: int = 100, device: torch.device | str = "cpu",
                    resident: bool | None = None) -> Iterator[dict]:
    """One epoch of batches for ``setting`` (``supervised``, ``unsupervised`` or ``semi-supervised``).

    Semi-supervised batches follow the thesis' scheme (reproduction notes rn-semi-batches): ``batch_size``
    unlabelled points drawn without replacement from the whole training set, plus ``labelled_batch_size`` labelled
    points (all of them when the labelled set is that small, so every batch sees the same labelled points). Binary
    data is binarised afresh here.

    ``resident`` (default: whenever ``device`` is not the CPU) keeps the data on ``device`` and draws the
    binarisation and the labelled picks there, from a device generator seeded once per epoch by ``generator``:
    the same scheme and the same data order, other random numbers than the CPU path, and no host-device transfer
    or synchronisation per batch. A run stays exactly resumable, since the epoch's seed comes from ``generator``.
    """
    if setting == "semi-supervised" and data.x_labelled is None:
        raise ValueError(f"a semi-supervised model needs a labelled subset: pass --labels N for {data.name}")
    if setting not in ("supervised", "unsupervised", "semi-supervised"):
        raise ValueError(f"unknown setting {setting!r}")
    if resident is None:
        resident = torch.device(device).type != "cpu"
    if resident:
        yield from _resident_batches(data, setting, batch_size, generator, labelled_batch_size, device)
        return
    n = len(data.x_train)
    perm = torch.randperm(n, generator=generator)
    for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
        idx = perm[start:start + batch_size]
        x = data.prepare(data.x_train[idx], generator).to(device)
        if setting == "supervised":
            yield {"x": x, "y": data.y_train[idx].to(device)}
        elif setting == "unsupervised":
            yield {"x": x}
        elif setting == "semi-supervised":
            n_l = len(data.x_labelled)
            lidx = (torch.arange(n_l) if n_l <= labelled_batch_size
                    else torch.randperm(n_l, generator=generator)[:labelled_batch_size])
            yield {"x_u": x, "x_l": data.prepare(data.x_labelled[lidx], generator).to(device),
                   "y_l": data.y_labelled[lidx].to(device)}
        else:
            raise ValueError(f"unknown setting {setting!r}")


def _resident_batches(data: DataBundle, setting: str, batch_size: int, generator: torch.Generator,
                      labelled_batch_size: int, device) -> Iterator[dict]:
    t = data.resident(device)
    device = t["x_train"].device
    n = len(data.x_train)
    perm = torch.randperm(n, generator=generator).to(device)  # the host path's data order, moved once per epoch
    epoch_seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    g = torch.Generator(device=device).manual_seed(epoch_seed)
    for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
        idx = perm[start:start + batch_size]
        x = data.prepare(t["x_train"][idx], g)
        if setting == "supervised":
            yield {"x": x, "y": t["y_train"][idx]}
        elif setting == "unsupervised":
            yield {"x": x}
        else:
            n_l = len(t["x_labelled"])
            lidx = (torch.arange(n_l, device=device) if n_l <= labelled_batch_size
                    else torch.randperm(n_l, generator=g, device=device)[:labelled_batch_size])
            yield {"x_u": x, "x_l": data.prepare(t["x_labelled"][lidx], g), "y_l": t["y_labelled"][lidx]}
