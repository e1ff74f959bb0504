"""Representation learning on the two half-moons: the small tanh network of thesis Figs 2.3 and 2.4 (book chapter 2).

The network (reproduction notes T1) is ``2 -> 10 (tanh) -> 2 (tanh) -> 1 (sigmoid)``:

    h^(0) = x,   h^(l) = tanh(W^(l) h^(l-1) + b^(l))  (l = 1, 2),   y_hat = sigma(W^(3) h^(2) + b^(3))

(thesis eqs. 2.1-2.5), trained with the Bernoulli cross-entropy (2.10) by Adam at learning rate 1e-2 on the full
batch. The 2-unit layer ``h^(2)`` is the representation we plot: its output layer is a *linear* classifier, so once
training has succeeded the two moons must be linearly separable in ``h^(2)``.

What the book imports from here:

* :class:`TanhClassifier` and :func:`train_tanh_classifier` (records parameter snapshots at chosen steps, the
  saturation of the tanh units at every step, and the first step at which the classes are linearly separable);
* :func:`saturated_fraction` (how many tanh activations sit on their flat tails);
* :func:`snapshot_schedule` (more frames early, where the representation changes fastest);
* :func:`mesh_grid_lines`, :func:`tendency_curves` and :func:`push_through` (send the mesh grid, the tendency lines
  and the data through the hidden layers);
* :func:`folded_fraction` (how much of the input plane the hidden layer folds over);
* :func:`hidden_view`, :func:`decision_frame`, :func:`draw_view` and :func:`training_animation` (Fig 2.4 panels, the
  same seen from the decision line, and a kernel-free animation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.distributions import Bernoulli

from dgmlab.runtime import budget

DEFAULT_STEPS: int = budget(fast=600, default=2000)
"""Full-batch Adam steps used by :func:`train_tanh_classifier` unless told otherwise (reproduction notes T1)."""

SATURATION_LEVEL: float = 0.99
"""A tanh activation with ``|h| > SATURATION_LEVEL`` counts as saturated: its slope ``1 - h^2`` is below 0.02."""

GRID_XLIM: tuple[float, float] = (-1.5, 2.5)
GRID_YLIM: tuple[float, float] = (-1.0, 1.5)


class TanhClassifier(nn.Module):
    """Binary classifier with tanh hidden layers and a sigmoid output (thesis eqs. 2.1-2.5, Fig 2.4).

    Args:
        in_dim: input dimension (2 for the half-moons).
        hidden: widths of the hidden layers; the default ``(10, 2)`` makes the last one plottable.
    """

    def __init__(self, in_dim: int = 2, hidden: Sequence[int] = (10, 2)):
        super().__init__()
        if not hidden or any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden must list at least one positive layer width, got {hidden!r}")
        widths = [int(in_dim), *map(int, hidden)]
        self.hidden_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.output_layer = nn.Linear(widths[-1], 1)
        self.in_dim, self.hidden_dims = int(in_dim), tuple(widths[1:])

    def representations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """All hidden activations ``[h^(1), ..., h^(L-1)]`` (eq. 2.2), each of shape ``(..., width)``."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"inputs must have {self.in_dim} features in the last axis, got shape {tuple(x.shape)}")
        hs, h = [], x
        for layer in self.hidden_layers:
            h = torch.tanh(layer(h))
            hs.append(h)
        return hs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logit ``W^(L) h^(L-1) + b^(L)``; ``sigmoid`` of it is ``y_hat`` of eq. 2.3. Shape ``(...,)``."""
        return self.output_layer(self.representations(x)[-1]).squeeze(-1)

    def p_y_given_x(self, x: torch.Tensor) -> Bernoulli:
        """The model's predictive distribution ``Bernoulli(y_hat(x))`` (the output of eq. 2.3 with g = sigmoid)."""
        return Bernoulli(logits=self(x))

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Bernoulli cross-entropy (eq. 2.10), averaged over the points instead of summed."""
        return -self.p_y_given_x(x).log_prob(y.to(x.dtype)).mean()

    @torch.no_grad()
    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Fraction of points whose predicted class (``y_hat > 0.5``) equals the label."""
        return float(((self(x) > 0).long() == y.long()).float().mean())


def _saturated(hs: Sequence[torch.Tensor], level: float) -> tuple[float, ...]:
    return tuple(float((h.detach().abs() > level).float().mean()) for h in hs)


@torch.no_grad()
def saturated_fraction(net: TanhClassifier, x: torch.Tensor, level: float = SATURATION_LEVEL) -> tuple[float, ...]:
    """For every hidden layer, the fraction of its tanh activations on ``x`` with ``|h| > level``.

    A saturated unit sits on a flat tail of the tanh: it barely moves when its input changes, so a region of the
    input plane where it saturates is squashed into (nearly) one value. Returns one fraction per hidden layer.
    """
    param = next(net.parameters())
    return _saturated(net.representations(x.to(device=param.device, dtype=param.dtype)), level)


@dataclass
class TrainRecord:
    """What :func:`train_tanh_classifier` remembers: training loss/accuracy at every step and parameter snapshots.

    ``loss[s]``, ``accuracy[s]`` and ``saturation[s]`` are measured on the training set with the parameters after
    ``s`` Adam updates (``s = 0 .. steps``); ``saturation[s]`` holds one :func:`saturated_fraction` per hidden layer.
    ``snapshots[s]`` holds those parameters for the requested steps (``s = 0``: initialisation).
    ``separable_step`` is the first ``s`` with ``accuracy[s] == 1``: the output layer is a linear classifier of the
    last hidden layer, so from then on its straight line separates the two training classes in that layer
    (``None`` if that never happened).
    """

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    saturation: list[tuple[float, ...]] = field(default_factory=list)
    snapshots: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)
    hidden: tuple[int, ...] = (10, 2)
    in_dim: int = 2
    separable_step: int | None = None

    @property
    def snapshot_steps(self) -> list[int]:
        return sorted(self.snapshots)

    def model_at(self, step: int) -> TanhClassifier:
        """A fresh network carrying the parameters recorded at ``step``."""
        if step not in self.snapshots:
            raise KeyError(f"no snapshot at step {step}; recorded steps: {self.snapshot_steps}")
        net = TanhClassifier(self.in_dim, self.hidden)
        net.load_state_dict(self.snapshots[step])
        return net


def snapshot_schedule(steps: int, n_frames: int, power: float = 2.0) -> list[int]:
    """``n_frames`` (or fewer, after removing repeats) step numbers from 0 to ``steps``, denser at the start.

    Step ``round(steps * (i / (n_frames - 1)) ** power)``: with ``power=2`` a quarter of the frames fall in the first
    6 % of training, where the hidden representation moves fastest.
    """
    if steps < 0 or n_frames < 2:
        raise ValueError(f"need steps >= 0 and n_frames >= 2, got steps={steps}, n_frames={n_frames}")
    grid = np.linspace(0.0, 1.0, n_frames) ** power
    return sorted({int(round(steps * g)) for g in grid})


def train_tanh_classifier(x: torch.Tensor, y: torch.Tensor, steps: int = DEFAULT_STEPS, lr: float = 1e-2,
                          hidden: Sequence[int] = (10, 2), seed: int = 0, snapshot_at: Sequence[int] = (),
                          net: TanhClassifier | None = None,
                          snapshot_separable: bool = False) -> tuple[TanhClassifier, TrainRecord]:
    """Full-batch Adam on the Bernoulli cross-entropy (eq. 2.10) (reproduction notes T1).

    Args:
        x: inputs ``(N, in_dim)``, float; y: labels ``(N,)`` in {0, 1}.
        steps: number of Adam updates (default :data:`DEFAULT_STEPS`, which follows the FAST budget).
        lr: Adam learning rate (1e-2, reproduction notes T1).
        hidden: hidden widths of a new network (ignored when ``net`` is given).
        seed: seeds the initialisation of a new network.
        snapshot_at: steps (0 = before training) at which to store a copy of the parameters.
        net: continue training this network instead of a fresh one.
        snapshot_separable: also store the parameters at ``record.separable_step``, the first step at which every
            training point is classified correctly. That step is not known before training, and it comes before
            the tanh units saturate (late in training most of them do, which squashes the picture of the hidden
            layer into the corners of the square), so it is the snapshot that shows the learned map best.

    Returns:
        ``(net, record)``: the trained network and a :class:`TrainRecord`.
    """
    if x.dim() != 2 or len(x) != len(y):
        raise ValueError(f"need x of shape (N, d) and y of shape (N,), got {tuple(x.shape)} and {tuple(y.shape)}")
    if not torch.is_floating_point(x):
        raise TypeError(f"x must be a float tensor, got {x.dtype}; use x.float()")
    bad = [s for s in snapshot_at if not 0 <= int(s) <= steps]
    if bad:
        raise ValueError(f"snapshot steps {bad} lie outside 0..{steps}; ask for steps within the training run")
    if net is None:
        torch.manual_seed(seed)
        net = TanhClassifier(x.shape[1], hidden)
    net = net.to(device=x.device, dtype=x.dtype)
    y = y.to(x.device)
    wanted = {int(s) for s in snapshot_at}
    record = TrainRecord(hidden=net.hidden_dims, in_dim=net.in_dim)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)

    def copy() -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}

    def measure(step: int) -> torch.Tensor:
        # loss, accuracy and saturation of the current parameters (after `step` updates) on the training set
        hs = net.representations(x)
        logits = net.output_layer(hs[-1]).squeeze(-1)                    # the same computation as net(x)
        loss = -Bernoulli(logits=logits).log_prob(y.to(x.dtype)).mean()  # eq. 2.10, averaged
        accuracy = float(((logits.detach() > 0).long() == y.long()).float().mean())
        record.loss.append(float(loss.detach()))
        record.accuracy.append(accuracy)
        record.saturation.append(_saturated(hs, SATURATION_LEVEL))
        if accuracy == 1.0 and record.separable_step is None:
            record.separable_step = step
            if snapshot_separable:
                record.snapshots[step] = copy()
        return loss

    if 0 in wanted:
        record.snapshots[0] = copy()
    for step in range(steps):
        optimiser.zero_grad()
        loss = measure(step)
        loss.backward()
        optimiser.step()
        if step + 1 in wanted:
            record.snapshots[step + 1] = copy()
    with torch.no_grad():
        measure(steps)
    return net, record


def mesh_grid_lines(xlim: tuple[float, float] = GRID_XLIM, ylim: tuple[float, float] = GRID_YLIM, n_lines: int = 20,
                    n_points: int = 200) -> torch.Tensor:
    """A regular mesh grid as densely sampled polylines, shape ``(2 * n_lines, n_points, 2)`` (thesis Fig 2.4a).

    The first ``n_lines`` are vertical lines ``x1 = const``, the rest horizontal lines ``x2 = const``; each line is
    sampled at ``n_points`` points so that its curved image under the network can be drawn.
    """
    if n_lines < 2 or n_points < 2:
        raise ValueError(f"need n_lines >= 2 and n_points >= 2, got {n_lines}, {n_points}")
    xs, ys = torch.linspace(*xlim, n_lines), torch.linspace(*ylim, n_lines)
    along_x2, along_x1 = torch.linspace(*ylim, n_points), torch.linspace(*xlim, n_points)
    vertical = torch.stack([xs[:, None].expand(n_lines, n_points), along_x2[None].expand(n_lines, n_points)], -1)
    horizontal = torch.stack([along_x1[None].expand(n_lines, n_points), ys[:, None].expand(n_lines, n_points)], -1)
    return torch.cat([vertical, horizontal])


def tendency_curves(n: int = 200) -> torch.Tensor:
    """The two noise-free moon centre curves, shape ``(2, n, 2)``: index 0 the lower moon (class 0), 1 the upper
    moon (class 1), so that ``curves[c]`` belongs to class ``c`` of :func:`dgmlab.data.supervised_moons`."""
    from dgmlab.data import tendency_lines

    upper, lower = tendency_lines(n)
    return torch.from_numpy(np.stack([lower, upper]))


@torch.no_grad()
def push_through(net: TanhClassifier, points, layer: int = -1) -> torch.Tensor:
    """Activations of hidden layer ``layer`` (``-1``: the last, 2-unit one) for ``points`` of shape ``(..., d)``.

    Accepts a tensor or a NumPy array; returns a tensor of shape ``(..., width of that layer)`` on the CPU.
    """
    pts = torch.as_tensor(np.asarray(points) if not isinstance(points, torch.Tensor) else points)
    param = next(net.parameters())
    hs = net.representations(pts.to(device=param.device, dtype=param.dtype))
    try:
        return hs[layer].cpu()
    except IndexError:
        raise ValueError(f"layer {layer} does not exist: the network has {len(hs)} hidden layers") from None


def folded_fraction(net: TanhClassifier, points, layer: int = -1) -> float:
    """How much of ``points`` the map ``x -> h^(layer)`` folds over: the share of points with the minority sign of
    the Jacobian determinant ``det(d h / d x)``.

    Needs a 2-d input and a 2-unit layer. Where the determinant is positive the map keeps the orientation of a small
    patch of the plane, where it is negative it mirrors it; a map that does one of the two everywhere lays the plane
    down without folding it (0 is returned), while one that does both folds the plane over itself along the curve
    ``det = 0``. Returns ``min(p, 1 - p)`` with ``p`` the share of positive determinants, so at most 0.5.
    """
    pts = torch.as_tensor(np.asarray(points) if not isinstance(points, torch.Tensor) else points)
    param = next(net.parameters())
    pts = pts.reshape(-1, pts.shape[-1]).to(device=param.device, dtype=param.dtype)
    try:
        width = net.hidden_dims[layer]
    except IndexError:
        n_layers = len(net.hidden_dims)
        raise ValueError(f"layer {layer} does not exist: the network has {n_layers} hidden layers") from None
    if net.in_dim != 2 or width != 2:
        raise ValueError(f"folding is measured for a map from 2-d inputs to a 2-unit layer, "
                         f"got {net.in_dim} -> {width}")
    pts = pts.detach().requires_grad_(True)
    with torch.enable_grad():
        h = net.representations(pts)[layer]
        # points do not interact, so the gradient of the sum of unit k gives row k of every point's Jacobian
        rows = [torch.autograd.grad(h[:, k].sum(), pts, retain_graph=k == 0)[0] for k in range(2)]
    det = rows[0][:, 0] * rows[1][:, 1] - rows[0][:, 1] * rows[1][:, 0]
    p = float((det > 0).float().mean())
    return min(p, 1.0 - p)


@dataclass
class HiddenView:
    """Data, mesh grid and tendency lines after one network: what one panel of Fig 2.4 shows.

    ``boundary`` is ``(w, b)`` of the output layer, whose zero set ``w . h + b = 0`` is the decision line in the
    plotted space (only meaningful when the plotted layer is the last hidden layer).
    """

    points: np.ndarray
    grid: np.ndarray
    curves: np.ndarray
    boundary: tuple[np.ndarray, float] | None = None
    step: int | None = None
    accuracy: float | None = None


def hidden_view(net: TanhClassifier | None, x: torch.Tensor, grid: torch.Tensor, curves: torch.Tensor,
                layer: int = -1, step: int | None = None, y: torch.Tensor | None = None) -> HiddenView:
    """Push data, grid and tendency curves through ``net`` into a :class:`HiddenView`.

    ``net=None`` keeps everything in input space (panel a of Fig 2.4). Inputs must be CPU tensors.
    """
    if net is None:
        return HiddenView(x.numpy(), grid.numpy(), curves.numpy(), step=step)
    last = layer in (-1, len(net.hidden_layers) - 1)
    boundary = None
    if last:
        w = net.output_layer.weight.detach().cpu().numpy()[0]
        boundary = (w, float(net.output_layer.bias.detach().cpu()[0]))
    acc = net.accuracy(x, y) if y is not None else None
    return HiddenView(push_through(net, x, layer).numpy(), push_through(net, grid, layer).numpy(),
                      push_through(net, curves, layer).numpy(), boundary, step, acc)


def decision_frame(view: HiddenView) -> HiddenView:
    """``view`` in coordinates aligned with the output layer's decision line ``w . h + b = 0``.

    The first coordinate is the signed distance to that line, ``(w . h + b) / |w|`` (positive on the class-1 side),
    the second the position along it, ``(w_perp . h) / |w|``: a rotation and shift of the hidden plane, which keeps
    lengths and crossings, so the picture is the same one seen from the line's point of view. Once training has
    stretched the hidden points along ``w`` (the thin cloud of Fig 2.4), plotting the second coordinate on its own
    scale shows the structure across that direction, e.g. where the mesh grid is folded.
    """
    if view.boundary is None:
        raise ValueError("the view has no decision line: make it with hidden_view(net, ...) for the last hidden layer")
    w, b = np.asarray(view.boundary[0], dtype=float), float(view.boundary[1])
    norm = float(np.linalg.norm(w))
    if w.shape != (2,) or norm == 0:
        raise ValueError(f"need a non-zero 2-d weight vector for the decision line, got {w!r}")
    basis = np.stack([w, np.array([-w[1], w[0]])], 1) / norm          # columns: across the line, along it

    def rotate(a: np.ndarray) -> np.ndarray:
        out = a @ basis
        out[..., 0] += b / norm
        return out

    return HiddenView(rotate(view.points), rotate(view.grid), rotate(view.curves), (np.array([1.0, 0.0]), 0.0),
                      view.step, view.accuracy)


CLASS_COLOURS = ("tab:red", "tab:blue")  # class 0 (lower moon), class 1 (upper moon)


def _boundary_segment(boundary, lim: float = 1.2) -> np.ndarray:
    """Two end points of the line ``w . h + b = 0`` across the box ``[-lim, lim]^2`` (or NaNs when ``w = 0``)."""
    (w1, w2), b = boundary
    if abs(w2) >= abs(w1) and w2 != 0:
        h1 = np.array([-lim, lim])
        return np.stack([h1, -(w1 * h1 + b) / w2], 1)
    if w1 != 0:
        h2 = np.array([-lim, lim])
        return np.stack([-(w2 * h2 + b) / w1, h2], 1)
    return np.full((2, 2), np.nan)


def draw_view(ax, view: HiddenView, y, *, title: str = "", hidden: bool = True, point_size: float = 4.0):
    """Draw one Fig 2.4 panel on ``ax``: grey mesh grid, data coloured by class, the two tendency lines in black/dashed
    (and, in hidden space, the output layer's decision line in green). Returns the artists, for animation."""
    from matplotlib.collections import LineCollection

    y = np.asarray(y)
    grid = LineCollection(list(view.grid), colors="0.6", linewidths=0.5, zorder=1)
    ax.add_collection(grid)
    scatter = ax.scatter(view.points[:, 0], view.points[:, 1], c=[CLASS_COLOURS[int(c)] for c in y], s=point_size,
                         alpha=0.6, linewidths=0, zorder=2)
    curve_lines = [ax.plot(*view.curves[c].T, color="k", lw=2.2, ls=ls, zorder=3,
                           label=f"tendency line, class {c} ({'upper' if c else 'lower'} moon)")[0]
                   for c, ls in ((0, "--"), (1, "-"))]
    boundary_line, = ax.plot([], [], color="tab:green", lw=1.5, zorder=4,
                             label="decision line of the output layer" if hidden else "_nolegend_")
    if hidden and view.boundary is not None:
        boundary_line.set_data(*_boundary_segment(view.boundary).T)
    if hidden:
        ax.set(xlim=(-1.1, 1.1), ylim=(-1.1, 1.1), xlabel="hidden unit $h^{(2)}_1$", ylabel="hidden unit $h^{(2)}_2$")
    else:
        ax.set(xlim=(GRID_XLIM[0] - 0.1, GRID_XLIM[1] + 0.1), ylim=(GRID_YLIM[0] - 0.1, GRID_YLIM[1] + 0.1),
               xlabel="input $x_1$", ylabel="input $x_2$")
    ax.set_aspect("equal")
    ax.set_title(title)
    return {"grid": grid, "scatter": scatter, "curves": curve_lines, "boundary": boundary_line}


def training_animation(views: Sequence[HiddenView], y, *, figsize=(4.2, 4.2), dpi: int = 70, interval: int = 150):
    """A matplotlib ``FuncAnimation`` of the hidden-space picture over ``views`` (one per training snapshot).

    Render it for a static page with ``anim.to_jshtml()``; all frames are precomputed, so no kernel is needed.
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    if not views:
        raise ValueError("need at least one view to animate; "
                         "record snapshots with train_tanh_classifier(snapshot_at=...)")
    fig, ax = plt.subplots(figsize=figsize, dpi=dpi, layout="constrained")
    artists = draw_view(ax, views[0], y, point_size=5.0)
    ax.legend(loc="upper left", fontsize=6, framealpha=0.8)

    def update(i: int):
        v = views[i]
        artists["grid"].set_segments(list(v.grid))
        artists["scatter"].set_offsets(v.points)
        for line, curve in zip(artists["curves"], v.curves):
            line.set_data(*curve.T)
        if v.boundary is not None:
            artists["boundary"].set_data(*_boundary_segment(v.boundary).T)
        acc = "" if v.accuracy is None else f", train accuracy {100 * v.accuracy:.1f} %"
        ax.set_title(f"hidden layer after {v.step} Adam steps{acc}", fontsize=8)
        return [artists["grid"], artists["scatter"], *artists["curves"], artists["boundary"]]

    update(0)
    anim = FuncAnimation(fig, update, frames=len(views), interval=interval, blit=False)
    plt.close(fig)
    return anim

