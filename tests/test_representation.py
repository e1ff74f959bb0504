"""The chapter-2 representation-learning network (dgmlab.representation; thesis Figs 2.3-2.4; reproduction notes T1)."""

import numpy as np
import pytest
import torch

from dgmlab.data import supervised_moons
from dgmlab.representation import (DEFAULT_STEPS, SATURATION_LEVEL, TanhClassifier, decision_frame, draw_view,
                                   folded_fraction, hidden_view, mesh_grid_lines, push_through, saturated_fraction,
                                   snapshot_schedule, tendency_curves, train_tanh_classifier, training_animation)


@pytest.fixture(scope="module")
def moons():
    return supervised_moons()


@pytest.fixture(scope="module")
def trained(moons):
    torch.set_num_threads(1)
    xtr, ytr, _, _ = moons
    return train_tanh_classifier(xtr, ytr, seed=0, snapshot_at=[0, 5, 50, DEFAULT_STEPS])


@pytest.fixture(scope="module")
def separable(moons):
    """The notebook's run: snapshots at the first step with 100 % training accuracy and at the end."""
    torch.set_num_threads(1)
    xtr, ytr, _, _ = moons
    return train_tanh_classifier(xtr, ytr, seed=0, snapshot_at=[DEFAULT_STEPS], snapshot_separable=True)


def test_reaches_full_train_accuracy_within_default_budget(moons, trained):
    xtr, ytr, xte, yte = moons
    net, record = trained
    assert net.accuracy(xtr, ytr) == 1.0, "the thesis reports 100 % accuracy on the half-moons (Fig 2.4c)"
    assert net.accuracy(xte, yte) >= 0.99
    assert record.accuracy[-1] == 1.0 and record.accuracy[0] < 1.0
    assert len(record.loss) == len(record.accuracy) == DEFAULT_STEPS + 1
    assert record.loss[-1] < 0.1 * record.loss[0]


def test_snapshots_recorded_at_requested_steps(moons, trained):
    xtr, ytr, _, _ = moons
    net, record = trained
    assert record.snapshot_steps == [0, 5, 50, DEFAULT_STEPS]
    # the last snapshot is the trained network; the first one is the untrained one
    final = record.model_at(DEFAULT_STEPS)
    assert torch.allclose(final(xtr), net(xtr))
    assert record.model_at(0).accuracy(xtr, ytr) == pytest.approx(record.accuracy[0])
    assert record.model_at(50).accuracy(xtr, ytr) == pytest.approx(record.accuracy[50])
    # snapshots are copies, not views of the live parameters
    assert not torch.equal(record.snapshots[0]["output_layer.weight"], record.snapshots[50]["output_layer.weight"])
    with pytest.raises(KeyError, match="recorded steps"):
        record.model_at(7)


def test_snapshot_request_outside_run_is_rejected(moons):
    xtr, ytr, _, _ = moons
    with pytest.raises(ValueError, match="outside"):
        train_tanh_classifier(xtr[:20], ytr[:20], steps=3, snapshot_at=[5])


def test_schedule_is_denser_early_and_hits_both_ends():
    steps = snapshot_schedule(1000, 30)
    assert steps[0] == 0 and steps[-1] == 1000
    assert steps == sorted(set(steps))
    assert np.diff(steps)[0] < np.diff(steps)[-1]


def test_grid_and_pushing_shapes():
    grid = mesh_grid_lines(n_lines=20, n_points=150)
    assert grid.shape == (40, 150, 2)
    # first half vertical (x1 constant), second half horizontal (x2 constant), covering the requested box
    assert torch.allclose(grid[:20, :, 0], grid[:20, :1, 0].expand(20, 150))
    assert torch.allclose(grid[20:, :, 1], grid[20:, :1, 1].expand(20, 150))
    assert grid[..., 0].min() == -1.5 and grid[..., 0].max() == 2.5
    assert grid[..., 1].min() == -1.0 and grid[..., 1].max() == 1.5
    curves = tendency_curves(100)
    assert curves.shape == (2, 100, 2)
    assert curves[1, :, 1].min() >= 0 and curves[0, :, 1].max() <= 0.5 + 1e-6  # upper moon = class 1

    net = TanhClassifier(2, (10, 2))
    assert push_through(net, grid).shape == (40, 150, 2)
    assert push_through(net, grid, layer=0).shape == (40, 150, 10)
    assert push_through(net, curves.numpy()).shape == (2, 100, 2)
    h = push_through(net, grid)
    assert h.abs().max() <= 1  # tanh units
    with pytest.raises(ValueError, match="hidden layers"):
        push_through(net, grid, layer=5)
    with pytest.raises(ValueError, match="features"):
        push_through(net, torch.zeros(4, 3))


def test_views_and_animation_render(moons, trained):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xtr, ytr, _, _ = moons
    _, record = trained
    grid, curves = mesh_grid_lines(n_lines=5, n_points=20), tendency_curves(20)
    views = [hidden_view(record.model_at(s), xtr, grid, curves, step=s, y=ytr) for s in (0, 50)]
    assert views[1].points.shape == (len(xtr), 2) and views[1].grid.shape == (10, 20, 2)
    assert views[1].boundary is not None and views[1].accuracy == pytest.approx(record.accuracy[50])
    fig, ax = plt.subplots()
    artists = draw_view(ax, hidden_view(None, xtr, grid, curves), ytr, hidden=False)
    assert ax.get_xlabel() and ax.get_ylabel() and len(artists["curves"]) == 2
    plt.close(fig)
    anim = training_animation(views, ytr, dpi=30)
    html = anim.to_jshtml()
    assert html.count("data:image/png;base64") == len(views)  # one embedded image per snapshot
    with pytest.raises(ValueError, match="at least one view"):
        training_animation([], ytr)


def test_saturation_and_first_separable_step_are_recorded(moons, trained):
    xtr, ytr, _, _ = moons
    _, record = trained
    assert len(record.saturation) == DEFAULT_STEPS + 1
    assert all(len(s) == 2 and all(0.0 <= f <= 1.0 for f in s) for s in record.saturation)  # one per hidden layer
    # the per-step record is the same measurement as saturated_fraction on the stored parameters
    for step in (0, 50, DEFAULT_STEPS):
        assert record.saturation[step] == pytest.approx(saturated_fraction(record.model_at(step), xtr))
    first = record.separable_step
    assert first is not None and 0 < first < DEFAULT_STEPS
    assert record.accuracy[first] == 1.0 and all(a < 1.0 for a in record.accuracy[:first])
    assert record.snapshot_steps == [0, 5, 50, DEFAULT_STEPS], "without snapshot_separable only the requested steps"


def test_separable_snapshot_comes_before_the_units_saturate(moons, trained, separable):
    """The snapshot of Figs 2.3b/2.4c: separable in h^(2), unsaturated, and the plane visibly folded."""
    xtr, ytr, _, _ = moons
    net, record = separable
    first = record.separable_step
    assert record.snapshot_steps == sorted({first, DEFAULT_STEPS})
    assert record.loss == trained[1].loss, "storing the extra snapshot must not change training"
    snap = record.model_at(first)
    assert snap.accuracy(xtr, ytr) == 1.0
    # linearly separable in h^(2): the output layer's own straight line classifies every training point
    h = push_through(snap, xtr)
    logit = h @ snap.output_layer.weight.detach()[0] + snap.output_layer.bias.detach()[0]
    assert torch.equal((logit > 0).long(), ytr.long())
    # measured criterion: few saturated units in h^(2) at the snapshot, most of them by the end of training
    at_snapshot, at_end = record.saturation[first][-1], record.saturation[-1][-1]
    assert at_snapshot < 0.25 < at_end
    assert saturated_fraction(snap, xtr)[-1] == pytest.approx(at_snapshot)
    # and the grid is folded over there (the point of showing this snapshot)
    assert folded_fraction(snap, mesh_grid_lines(n_lines=20, n_points=50)) > 0.1


def test_saturated_fraction_counts_flat_tails():
    net = TanhClassifier(2, (2,))
    with torch.no_grad():
        net.hidden_layers[0].weight.copy_(torch.tensor([[10.0, 0.0], [0.0, 0.1]]))
        net.hidden_layers[0].bias.zero_()
    x = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    # tanh(10) > 0.99 is the only saturated activation of the four
    assert saturated_fraction(net, x) == (0.25,)
    assert saturated_fraction(net, x, level=0.05) == (0.5,)
    assert saturated_fraction(net, x, level=SATURATION_LEVEL) == (0.25,)


def _net(hidden, weights):
    net = TanhClassifier(2, hidden)
    with torch.no_grad():
        for layer, (w, b) in zip(net.hidden_layers, weights):
            layer.weight.copy_(torch.tensor(w))
            layer.bias.copy_(torch.tensor(b))
    return net


def test_folded_fraction_tells_a_fold_from_a_plain_deformation():
    pts = torch.cartesian_prod(torch.linspace(-1, 1, 20), torch.linspace(-1, 1, 20))  # x2 never exactly 0
    # tanh of an invertible linear map bends the plane but never folds it
    plain = _net((2,), [([[1.0, 0.5], [-0.3, 2.0]], [0.1, -0.2])])
    assert folded_fraction(plain, pts) == 0.0
    # u = (tanh x1, tanh(x2 + 1), tanh(x2 - 1)); h_b = tanh((u2 - u3) / 2) is even in x2, so the map folds the plane
    # along x2 = 0: half the points are mirrored
    fold = _net((3, 2), [([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], [0.0, 1.0, -1.0]),
                         ([[1.0, 0.0, 0.0], [0.0, 0.5, -0.5]], [0.0, 0.0])])
    assert folded_fraction(fold, pts) == pytest.approx(0.5)
    assert folded_fraction(fold, pts[pts[:, 1] > 0]) == 0.0
    with pytest.raises(ValueError, match="2-unit layer"):
        folded_fraction(fold, pts, layer=0)
    with pytest.raises(ValueError, match="hidden layers"):
        folded_fraction(fold, pts, layer=4)


def test_decision_frame_is_a_rigid_motion_with_the_line_at_zero(moons, separable):
    xtr, ytr, _, _ = moons
    _, record = separable
    snap = record.model_at(record.separable_step)
    grid, curves = mesh_grid_lines(n_lines=5, n_points=20), tendency_curves(20)
    view = hidden_view(snap, xtr, grid, curves, y=ytr)
    turned = decision_frame(view)
    # first coordinate: signed distance to the decision line, positive on the class-1 side
    w = np.asarray(view.boundary[0])
    assert np.allclose(turned.points[:, 0], (view.points @ w + view.boundary[1]) / np.linalg.norm(w), atol=1e-6)
    assert np.array_equal(turned.points[:, 0] > 0, ytr.numpy() == 1)
    # distances are kept, so crossings and folds look the same
    d = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)  # noqa: E731
    assert np.allclose(d(turned.points[:50]), d(view.points[:50]), atol=1e-5)
    assert turned.grid.shape == view.grid.shape and turned.curves.shape == view.curves.shape
    assert np.allclose(turned.boundary[0], [1.0, 0.0]) and turned.boundary[1] == 0.0
    with pytest.raises(ValueError, match="decision line"):
        decision_frame(hidden_view(None, xtr, grid, curves))
