"""Physics and data checks of the simulated PV plant (dgmlab.data.pv)."""

import numpy as np
import pytest
import torch

from dgmlab.data.paths import DataError
from dgmlab.data.pv import CLASSES, SENSORS, SHARES, class_counts, load_pv_arrays, simulate
from dgmlab.data.pv import dataset as pvds
from dgmlab.data.pv import electrical as el

N_SMALL = 400
PLAIN = np.zeros((0, 1), int)   # no shaded substring


@pytest.fixture(scope="module")
def small():
    return simulate(seed=0, n_samples=N_SMALL, cache=False)


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DGMLAB_CACHE", str(tmp_path))
    monkeypatch.delenv("DGMLAB_DATA", raising=False)
    return tmp_path


def mpp(g, t, counts=PLAIN, dr=0.0):
    return el.max_power_point(np.asarray(g, float).reshape(len(t), -1), np.asarray(t, float), counts, dr)


def test_module_parameters_reproduce_the_datasheet():
    il, i0, rs, rsh, nvth = el.cell_params(1000.0, 25.0)
    i, v = mpp([1000.0], [25.0])
    # 8 modules of 30 V / 3.75 A at STC, less the cable drop
    assert i[0] == pytest.approx(3.75, rel=0.01)
    assert v[0] + i[0] * el.CABLE_RESISTANCE == pytest.approx(240.0, rel=0.01)


def test_current_proportional_to_irradiance():
    g = np.array([200.0, 400.0, 600.0, 800.0, 1000.0])
    i, _ = mpp(g, np.full(5, 25.0))
    ratio = i / g
    assert np.ptp(ratio) / ratio.mean() < 0.03   # within 3 % of proportional


def test_mpp_voltage_falls_with_module_temperature():
    t = np.array([-10.0, 0.0, 15.0, 30.0, 45.0])
    _, v = mpp(np.full(5, 800.0), t)
    assert np.all(np.diff(v) < 0)
    slope = np.polyfit(t, v, 1)[0] / v[1]
    assert -0.006 < slope < -0.002   # about -0.4 %/K


@pytest.mark.parametrize("dr", [4.0, 8.0])
def test_series_resistance_drops_voltage_by_i_delta_r(dr):
    g, t = np.array([300.0, 600.0, 900.0]), np.full(3, 20.0)
    _, v0 = mpp(g, t)
    i1, v1 = mpp(g, t, dr=dr)
    # the tracker moves to a slightly lower current and recovers part of the drop: within 20 % of I*dR
    assert np.allclose(v0 - v1, i1 * dr, rtol=0.2)


def test_bypassed_substring_costs_one_24th_of_the_voltage():
    g = np.array([[800.0, 80.0], [1000.0, 100.0]])   # PS50: 10 cells of one substring in shade
    t = np.full(2, 20.0)
    i0, v0 = mpp(g[:, :1], t)
    i1, v1 = mpp(g, t, counts=np.array([[10, 10]]))
    assert np.allclose(i1, i0, rtol=0.02)             # current barely changes ...
    assert np.allclose(v1 / v0, 23 / 24, atol=0.01)   # ... one of 24 substrings is bypassed


def test_class_counts_match_table_6_1():
    counts = class_counts(15000)
    assert counts.sum() == 15000
    assert np.allclose(counts / 15000, np.asarray(SHARES) / sum(SHARES), atol=2e-4)


def test_small_dataset_shapes_shares_and_classes(small):
    assert small.x.shape == (N_SMALL, 6) and small.x.dtype == np.float32
    assert small.sensors == SENSORS and small.classes == CLASSES
    counts = np.bincount(small.y, minlength=10)
    assert np.all(counts > 0)
    assert np.allclose(counts / N_SMALL, np.asarray(SHARES) / sum(SHARES), atol=0.01)
    for c in range(10):   # every class spans at least two days and no day holds two classes
        assert len(np.unique(small.day[small.y == c])) >= 2
    for d in np.unique(small.day):
        assert len(np.unique(small.y[small.day == d])) == 1
    assert np.all(np.diff(small.time) >= 0)
    assert np.isfinite(small.x).all() and (small.x[:, 0] > -0.1).all() and (small.x[:, 5] >= 0).all()


def test_determinism(small):
    again = simulate(seed=0, n_samples=N_SMALL, cache=False)
    assert np.array_equal(small.x, again.x) and np.array_equal(small.y, again.y)
    other = simulate(seed=1, n_samples=N_SMALL, cache=False)
    assert not np.array_equal(small.x, other.x)


def test_cache_round_trip_and_checksum(tmp_cache, monkeypatch, small):
    data = simulate(seed=0, n_samples=N_SMALL)
    path = tmp_cache / "pv" / pvds.cache_name(0, N_SMALL)
    assert path.exists() and path.with_suffix(".json").exists()
    assert np.array_equal(data.x, small.x)
    monkeypatch.setattr(pvds, "_generate", lambda *a: pytest.fail("should read the cache"))
    cached = simulate(seed=0, n_samples=N_SMALL)
    assert np.array_equal(cached.x, data.x) and np.array_equal(cached.day, data.day)
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="corrupt"):
        simulate(seed=0, n_samples=N_SMALL)


@pytest.mark.parametrize("inputs,dim", [("simple", 2), ("complex", 6)])
def test_load_pv_arrays(tmp_cache, monkeypatch, small, inputs, dim):
    monkeypatch.setattr(pvds, "simulate", lambda *a, **k: small)
    split = load_pv_arrays(seed=0, inputs=inputs, n_samples=N_SMALL)
    assert split.x_train.shape[1] == dim and split.sensors == pvds.INPUT_SETS[inputs]
    assert len(split.x_train) + len(split.x_test) == N_SMALL
    assert len(split.x_test) == round(0.2 * N_SMALL)
    assert split.y_train.dtype == torch.int64
    assert torch.allclose(split.x_train.mean(0), torch.zeros(dim), atol=1e-4)
    assert torch.allclose(split.x_train.std(0), torch.ones(dim), atol=1e-3)
    by_day = load_pv_arrays(seed=0, inputs=inputs, n_samples=N_SMALL, split="day")
    assert not set(by_day.day_train.tolist()) & set(by_day.day_test.tolist())
    assert set(by_day.y_test.tolist()) == set(range(10))


def test_bad_arguments():
    with pytest.raises(ValueError, match="inputs"):
        load_pv_arrays(inputs="everything")
    with pytest.raises(ValueError, match="n_samples"):
        simulate(n_samples=5)
    with pytest.raises(TypeError, match="n_samples"):
        simulate(n_samples=1000.0)
    with pytest.raises(ValueError, match="seed"):
        simulate(seed=-1)
    with pytest.raises(ValueError, match="unknown condition"):
        from dgmlab.data.pv.conditions import layout
        layout("XX")
    with pytest.raises(ValueError, match="split"):
        pvds.split_indices(pvds.PVData(np.zeros((10, 6)), np.arange(10), np.arange(10), np.arange(10)), split="x")
