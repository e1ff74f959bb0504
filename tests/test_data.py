import shutil

import pytest
import torch

from dgmlab.data import (DataError, balanced_subset, binarize, iterate_batches, load_data, semi_supervised_moons,
                         supervised_moons, tendency_lines)
from dgmlab.data import mnist as mnist_mod


def test_supervised_moons_shapes_and_balance():
    xtr, ytr, xte, yte = supervised_moons(n_train=1000, n_test=500)
    assert xtr.shape == (1000, 2) and xtr.dtype == torch.float32
    assert ytr.dtype == torch.int64 and ytr.bincount().tolist() == [500, 500]
    assert xte.shape == (500, 2)
    # the upper moon is class 1: its points lie higher on average
    assert xtr[ytr == 1, 1].mean() > xtr[ytr == 0, 1].mean()
    up, low = tendency_lines(50)
    assert up.shape == low.shape == (50, 2)


def test_semi_supervised_moons_six_labels():
    data = load_data("halfmoons", labels=6)
    assert data.x_train.shape == (10_000, 2) and data.x_test.shape == (10_000, 2)
    assert data.n_labelled == 6 and data.y_labelled.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.x_train.min() >= 0  # shifted by |min|
    assert not torch.equal(data.x_train, data.x_test)
    xtr, *_ = semi_supervised_moons()
    assert torch.equal(xtr, data.x_train)  # deterministic


def test_halfmoons_rejects_other_label_counts():
    with pytest.raises(ValueError, match="six fixed labelled points"):
        load_data("halfmoons", labels=10)


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*halfmoons"):
        load_data("cifar")


def test_mnist_shapes_trim_and_balance(mnist_available):
    full = load_data("mnist")
    assert full.x_train.shape == (60_000, 784) and full.x_test.shape == (10_000, 784)
    assert 0 <= full.x_train.min() and full.x_train.max() <= 1
    assert full.y_test.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    trimmed = load_data("mnist", labels=100, trim=True, seed=3)
    assert trimmed.input_dim == 444  # thesis: pixels with std < 0.1 dropped
    assert trimmed.y_labelled.bincount().tolist() == [10] * 10
    assert trimmed.to_image(trimmed.x_test[:2]).shape == (2, 28, 28)
    again = load_data("mnist", labels=100, trim=True, seed=3)
    assert torch.equal(again.x_labelled, trimmed.x_labelled)
    other = load_data("mnist", labels=100, trim=True, seed=4)
    assert not torch.equal(other.x_labelled, trimmed.x_labelled)


def test_binarisation_statistics():
    x = torch.rand(2000, 50, generator=torch.Generator().manual_seed(1))
    xb = binarize(x, torch.Generator().manual_seed(2))
    assert set(xb.unique().tolist()) <= {0.0, 1.0}
    # each pixel is on with probability equal to its intensity
    assert abs(xb.mean().item() - x.mean().item()) < 0.01
    assert torch.allclose(xb.mean(0), x.mean(0), atol=0.08)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binarize(x * 2)


def test_dynamic_binarisation_changes_between_epochs_but_test_is_fixed(mnist_available):
    data = load_data("mnist", n_train=200, n_test=50)
    gen = torch.Generator().manual_seed(0)
    first = next(iterate_batches(data, "unsupervised", 200, gen))["x"]
    second = next(iterate_batches(data, "unsupervised", 200, gen))["x"]
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first.sort(0).values, second.sort(0).values)
    assert torch.equal(data.test_inputs(), data.test_inputs())


def test_labelled_batch_scheme_repeats_the_same_labelled_points():
    data = load_data("halfmoons", labels=6)
    batches = list(iterate_batches(data, "semi-supervised", 100, torch.Generator().manual_seed(0)))
    assert len(batches) == 100
    for b in batches[:5]:
        assert b["x_u"].shape == (100, 2)
        assert torch.equal(b["x_l"], data.x_labelled) and torch.equal(b["y_l"], data.y_labelled)
    supervised = load_data("halfmoons")
    with pytest.raises(ValueError, match="--labels"):
        next(iterate_batches(supervised, "semi-supervised", 100, torch.Generator()))


def test_balanced_subset_errors():
    y = torch.arange(10).repeat(5)
    assert balanced_subset(y, 20, 10, seed=0).numel() == 20
    with pytest.raises(ValueError, match="evenly"):
        balanced_subset(y, 15, 10, seed=0)
    with pytest.raises(ValueError, match="holds only 50"):
        balanced_subset(y, 100, 10, seed=0)
    with pytest.raises(ValueError, match="class 9 has only 0"):
        balanced_subset(y[y != 9], 10, 10, seed=0)
    with pytest.raises(ValueError, match="positive integer"):
        balanced_subset(y, 0, 10, seed=0)


def _staged_copy(tmp_path, mnist_available):
    from dgmlab.data.paths import fetch

    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for spec in mnist_mod.FILES.values():
        shutil.copy(fetch(spec), folder / spec.name)
    return folder


def test_corrupt_file_is_rejected(tmp_path, monkeypatch, mnist_available):
    folder = _staged_copy(tmp_path, mnist_available)
    target = folder / "train-labels-idx1-ubyte.gz"
    good_labels = target.read_bytes()
    target.write_bytes(good_labels[:-100])  # truncated
    monkeypatch.setenv("DGMLAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DGMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(mnist_mod, "_CACHE", {})
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_data("mnist")
    target.write_bytes(good_labels)  # repaired
    flipped = bytearray((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    flipped[100] ^= 0xFF  # same size, different bytes
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="t10k-labels.*corrupt: sha256"):
        load_data("mnist")


def test_missing_data_without_network_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DGMLAB_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("DGMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DGMLAB_OFFLINE", "1")
    monkeypatch.setattr(mnist_mod, "_CACHE", {})
    with pytest.raises(DataError, match=r"not found in .*empty.*DGMLAB_DATA"):
        load_data("mnist")
    assert not (tmp_path / "cache" / "mnist").exists() or not any((tmp_path / "cache" / "mnist").iterdir())


def test_halfmoons_class_densities_integrate_to_one_and_give_the_bayes_error():
    from dgmlab.data.halfmoons import (bayes_error, class_log_densities, semi_supervised_moons,
                                       semi_supervised_shift)

    step = 0.025
    g1, g2 = torch.meshgrid(torch.arange(-2.0, 3.0, step), torch.arange(-1.7, 2.2, step), indexing="ij")
    grid = torch.stack([g1.reshape(-1), g2.reshape(-1)], 1)
    mass = class_log_densities(grid, noise=0.2, n_curve=400).exp().sum(0) * step**2
    assert torch.allclose(mass, torch.ones(2, dtype=mass.dtype), atol=5e-3)
    _, _, x_test, y_test, _, _ = semi_supervised_moons()
    shift = semi_supervised_shift()
    floor = bayes_error(x_test, y_test, noise=0.2, shift=shift)
    assert 1.0 < floor < 6.0  # the moons overlap a little at noise 0.2
    assert bayes_error(x_test, 1 - y_test, noise=0.2, shift=shift) == pytest.approx(100 - floor)
    from dgmlab.data.halfmoons import bayes_error_of_test_set

    assert bayes_error_of_test_set() == pytest.approx(floor)
    with pytest.raises(ValueError, match="shape"):
        class_log_densities(torch.zeros(3, 3))
