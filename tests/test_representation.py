"""The chapter-2 representation-learning network (dgmlab.representation; thesis Figs 2.3-2.4, SPEC 4.1)."""

import numpy as np
import pytest
import torch

from dgmlab.data import supervised_moons
from dgmlab.representation import (DEFAULT_STEPS, TanhClassifier, draw_view, hidden_view, mesh_grid_lines,
                                   push_through, snapshot_schedule, tendency_curves, train_tanh_classifier,
                                   training_animation)


@pytest.fixture(scope="module")
def moons():
    return supervised_moons()


@pytest.fixture(scope="module")
def trained(moons):
    torch.set_num_threads(1)
    xtr, ytr, _, _ = moons
    return train_tanh_classifier(xtr, ytr, seed=0, snapshot_at=[0, 5, 50, DEFAULT_STEPS])


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
