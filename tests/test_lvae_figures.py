"""The figure, table and claim helpers of the Ladder VAE page (dgmlab.lvae_figures): shapes and sorting of the Fig. 5.2
matrix, the Fig. 5.3 table, active units, the claims, Table 5.1 verdicts, PCA and k-NN, on synthetic records and on
the shipped run group ``lvae-variants``."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from dgmlab import lvae_figures as lf  # noqa: E402
from dgmlab.pretrained import run_group  # noqa: E402


@pytest.fixture(scope="module")
def shipped():
    return run_group("lvae-variants")


def fake_history(sizes=(3, 2), epochs=4, seed=0):
    """Per-epoch records with random per-unit KL (some negative, as Monte Carlo estimates of collapsed units are)."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(epochs):
        rec = {"epoch": t + 1, "train_elbo": -100.0 + t, "test_elbo": -99.0 + t, "train_temperature": 1.0}
        for i, s in enumerate(sizes):
            rec[f"test_unit_kl_layer{i + 1}"] = list(rng.normal(0.5, 1.0, s))
            rec[f"test_active_units_layer{i + 1}"] = int(sum(k > 0.01 for k in rec[f"test_unit_kl_layer{i + 1}"]))
        out.append(rec)
    return out


def fake_run(variant, depth, sizes=(4, 3, 2, 2, 1), active=None, test_elbo=-100.0, l5000=-95.0, epochs=3):
    sizes = sizes[:depth]
    active = active or [s // 2 for s in sizes]
    final = {"test_elbo": test_elbo, "test_log_likelihood_iw5000": l5000, "n_test": 10_000,
             **{f"test_active_units_layer{i + 1}": a for i, a in enumerate(active)},
             **{f"test_kl_layer{i + 1}": float(a) for i, a in enumerate(active)}}
    history = fake_history(sizes, epochs)
    return {"config": {"z_dims": list((4, 3, 2, 2, 1)), "depth": depth}, "history": history, "eval": final,
            "epochs_done": epochs, "train_time_s": 30.0}


def fake_group():
    return {lf.run_name(v, d): fake_run(v, d) for v in lf.VARIANTS for d in lf.DEPTHS}


# --- Fig. 5.2 -------------------------------------------------------------------------------------------------------
def test_unit_kl_map_shapes_sorting_and_floor():
    hist = fake_history(sizes=(3, 2), epochs=4)
    m = lf.unit_kl_map(hist, floor=1e-3)
    assert m.log_kl.shape == (5, 4) and m.sizes == (3, 2) and m.layers == ("z1", "z2")
    assert list(m.starts) == [0, 3] and list(m.epochs) == [1, 2, 3, 4]
    for i, (start, size) in enumerate(zip(m.starts, m.sizes)):
        final = np.array(hist[-1][f"test_unit_kl_layer{i + 1}"])
        assert np.allclose(m.final_kl[i], np.sort(final)[::-1])               # largest final KL first
        assert np.allclose(m.final_kl[i], final[m.order[i]])
        block = m.log_kl[start:start + size]
        assert np.all(np.diff(block[:, -1]) <= 0)                              # rows sorted by the last column
        raw = np.array([[h[f"test_unit_kl_layer{i + 1}"][u] for h in hist] for u in m.order[i]])
        assert np.allclose(block, np.log10(np.clip(raw, 1e-3, None)))         # whole rows move together
    assert m.log_kl.min() >= -3


@pytest.mark.parametrize("history, match", [
    ([], "non-empty"),
    ([{"epoch": 1, "test_elbo": -1.0}], "per-unit KL"),
    ([{"epoch": 1, "test_unit_kl_layer1": [1, 2]}, {"epoch": 2, "test_unit_kl_layer1": [1]}], "expected 2 units"),
    ([{"epoch": 1, "test_unit_kl_layer1": [1, 2]}, {"epoch": 2}], "records nothing"),
    ([{"epoch": 1}, {"epoch": 2, "test_unit_kl_layer1": [1, 2]}, {"epoch": 3}], "history\\[2\\] records nothing"),
])
def test_unit_kl_map_rejects_bad_histories(history, match):
    with pytest.raises(ValueError, match=match):
        lf.unit_kl_map(history)


def test_unit_kl_map_leaves_epochs_before_the_first_record_unrecorded():
    # a run begun before the loop recorded per-unit KL and resumed after it: its first epochs are NaN columns
    hist = [{"epoch": 1, "test_elbo": -100.0}, {"epoch": 2, "test_elbo": -99.0}] + fake_history(epochs=3)[:3]
    for t, h in enumerate(hist):
        h["epoch"] = t + 1
    m = lf.unit_kl_map(hist)
    assert m.unrecorded == 2 and m.log_kl.shape == (5, 5) and list(m.epochs) == [1, 2, 3, 4, 5]
    assert np.isnan(m.log_kl[:, :2]).all() and np.isfinite(m.log_kl[:, 2:]).all()
    full = lf.unit_kl_map(hist[2:])
    assert np.allclose(m.log_kl[:, 2:], full.log_kl) and full.unrecorded == 0
    fig = lf.plot_unit_kl_maps({"resumed": m})
    assert fig.axes[0].images[0].get_cmap().get_bad()[:3] == pytest.approx((0.8, 0.8, 0.8))
    plt.close(fig)


def test_unit_kl_map_rejects_bad_floor():
    with pytest.raises(ValueError, match="floor"):
        lf.unit_kl_map(fake_history(), floor=0)


def test_plot_unit_kl_maps_draws_one_panel_per_model():
    maps = {"a": lf.unit_kl_map(fake_history()), "b": lf.unit_kl_map(fake_history(seed=1))}
    fig = lf.plot_unit_kl_maps(maps, titles={"a": "A"})
    assert len(fig.axes) == 3 and fig.axes[0].get_title() == "A"  # two panels and a colour bar
    plt.close(fig)
    with pytest.raises(ValueError, match="empty"):
        lf.plot_unit_kl_maps({})


# --- Fig. 5.3, active units, claims ---------------------------------------------------------------------------------
def test_bounds_table_reads_final_checkpoints():
    rows = lf.bounds_table(fake_group())
    assert len(rows) == len(lf.VARIANTS) * len(lf.DEPTHS)
    assert {(r["variant"], r["depth"]) for r in rows} == {(v, d) for v in lf.VARIANTS for d in lf.DEPTHS}
    r = rows[0]
    assert r["test_L1"] == -100.0 and r["test_L5000"] == -95.0 and r["epochs"] == 3
    assert r["train_L1"] == -98.0  # the last of the 3 epochs
    fig, axes = plt.subplots(1, 3)
    lf.plot_bounds_by_depth(axes, rows, thesis={"test_L1": [(5, -85.0, "thesis")], "test_L5000": [(None, -82, "x")]})
    plt.close(fig)
    with pytest.raises(ValueError, match="3 axes"):
        lf.plot_bounds_by_depth(axes[:2], rows)


def test_missing_run_is_one_clear_error():
    group = fake_group()
    del group["lvae-bn-wu-d3"]
    with pytest.raises(ValueError, match="no run 'lvae-bn-wu-d3'"):
        lf.bounds_table(group)
    with pytest.raises(ValueError, match="unknown variant"):
        lf.run_name("iwae", 2)


def test_active_units_table_and_claims_on_synthetic_group():
    group = fake_group()
    group["vae-d5"] = fake_run("vae", 5, active=[3, 0, 0, 0, 0], test_elbo=-100.0)
    group["lvae-bn-wu-d5"] = fake_run("lvae-bn-wu", 5, active=[4, 3, 2, 2, 1], test_elbo=-90.0)
    rows = lf.active_units_table(group, depth=5)
    assert [r["model"] for r in rows] == [lf.VARIANT_NAMES[v] for v in lf.VARIANTS]
    assert rows[0]["z1"] == "3 / 4" and rows[-1]["all layers"] == "12 / 12"
    claims = {c.claim: c for c in lf.check_claims(group)}
    assert claims["the plain VAE leaves every layer above z2 inactive (depth 5)"].holds
    assert claims["the LVAE uses every layer"].holds
    assert claims["the LVAE has the tightest test L_1 at depth 5"].holds
    assert not claims["the LVAE improves with every added layer (test L_1)"].holds  # equal values: no gain
    with pytest.raises(ValueError, match="at least 3"):
        lf.check_claims(group, depth=2)


def test_plain_vae_depth_claim_compares_runs_at_the_last_common_epoch():
    group = fake_group()
    name = "the plain VAE gains nothing from layers beyond the first (test L_1)"
    deep = group["vae-d5"] = fake_run("vae", 5, epochs=6)       # longer: its final L_1 is 3 nats better
    deep["eval"]["test_elbo"] = -94.0
    claim = {c.claim: c for c in lf.check_claims(group)}[name]
    assert claim.holds and "at epoch 3" in claim.evidence and "L=5: -97.00" in claim.evidence
    deep["history"][2]["test_elbo"] = -96.0                      # better by a nat at the common epoch
    assert not {c.claim: c for c in lf.check_claims(group)}[name].holds
    assert {c.claim: c for c in lf.check_claims(group, tolerance=1.5)}[name].holds
    del deep["history"][:3]                                      # epochs 4-6 only: no common epoch
    with pytest.raises(ValueError, match="no epoch 3"):
        lf.check_claims(group)


def _set_l1(run, value):
    """Give a synthetic run the test L_1 ``value`` at every epoch."""
    for h in run["history"]:
        h["test_elbo"] = value
    run["eval"]["test_elbo"] = value


def test_depth_claims_count_a_gain_only_above_the_tolerance():
    group = fake_group()
    wu_name = "VAE+BN+WU gains up to three layers and not beyond (test L_1)"
    lvae_name = "the LVAE improves with every added layer (test L_1)"
    for d, value in zip(lf.DEPTHS, (-95.0, -90.0, -90.3)):      # gains 5 nats, then loses 0.3: up to three layers
        _set_l1(group[lf.run_name("vae-bn-wu", d)], value)
    for d, value in zip(lf.DEPTHS, (-95.0, -90.0, -89.0)):      # gains 5 nats, then 1 nat
        _set_l1(group[lf.run_name("lvae-bn-wu", d)], value)
    claims = {c.claim: c for c in lf.check_claims(group)}
    assert claims[wu_name].holds and "L=3: -90.00" in claims[wu_name].evidence
    assert claims[lvae_name].holds and "L_5000" in claims[lvae_name].evidence
    _set_l1(group[lf.run_name("lvae-bn-wu", 5)], -89.7)          # the last layer adds 0.3 nats: a tie, not a gain
    _set_l1(group[lf.run_name("vae-bn-wu", 5)], -89.0)           # five layers beat three by a nat
    claims = {c.claim: c for c in lf.check_claims(group)}
    assert not claims[lvae_name].holds and not claims[wu_name].holds
    assert {c.claim: c for c in lf.check_claims(group, tolerance=0.2)}[lvae_name].holds   # 0.3 nats: a gain
    # without a depth of three there is nothing to say about "up to three layers"
    assert wu_name not in {c.claim for c in lf.check_claims(group, depths=(1, 5))}


def test_pruning_claim_compares_the_peak_of_the_history_with_the_final_checkpoint():
    group = fake_group()
    name = "warm-up activates many units early and some are pruned later (units above z1)"
    for v in ("vae-bn-wu", "lvae-bn-wu"):
        run = group[lf.run_name(v, 5)]
        for t, h in enumerate(run["history"]):      # z2..z5 active: 6, 7, 6 over the epochs; evaluation: 5
            h.update({"test_active_units_layer2": 3, "test_active_units_layer3": 1 + (t == 1),
                      "test_active_units_layer4": 1, "test_active_units_layer5": 1})
        run["eval"].update({"test_active_units_layer2": 2, "test_active_units_layer3": 1,
                            "test_active_units_layer4": 1, "test_active_units_layer5": 1})
    claim = {c.claim: c for c in lf.check_claims(group)}[name]
    assert claim.holds and "7 at epoch 2, 5 at the end" in claim.evidence
    group[lf.run_name("lvae-bn-wu", 5)]["eval"]["test_active_units_layer2"] = 5     # 8 at the end: nothing pruned
    assert not {c.claim: c for c in lf.check_claims(group)}[name].holds
    for h in group[lf.run_name("lvae-bn-wu", 5)]["history"]:
        del h["test_active_units_layer2"]
    with pytest.raises(ValueError, match="no active units per layer"):
        lf.check_claims(group)


# --- Table 5.1 ------------------------------------------------------------------------------------------------------
def test_ll_verdict_and_compare_with_thesis():
    assert lf.ll_verdict(-82.3, -82.12) == "reproduced"          # within half a nat
    assert lf.ll_verdict(-90.0, -82.12, claim_holds=True) == "partly"
    assert lf.ll_verdict(-90.0, -82.12) == "not yet"
    assert lf.ll_verdict(None, -82.12, claim_holds=True) == "not yet"
    with pytest.raises(ValueError, match="finite"):
        lf.ll_verdict(float("nan"), -82.0)
    thesis = [{"model": "LVAE", "L": 5, "IW": 1, "thesis": -82.12},
              {"model": "IWAE", "L": 2, "IW": 50, "thesis": -82.9}]
    rows = lf.compare_with_thesis(thesis, {("LVAE", 5, 1): {"value": -122.0, "run": "x", "why": "24 epochs"}})
    assert rows[0]["verdict"] == "not yet" and rows[0]["ours - thesis"] == pytest.approx(-39.88)
    assert rows[1]["ours"] is None and rows[1]["our run"] == "not run"
    with pytest.raises(ValueError, match="lacks thesis"):
        lf.compare_with_thesis([{"model": "LVAE", "L": 5, "IW": 1}], {})


# --- PCA and k-NN ---------------------------------------------------------------------------------------------------
def test_pca_and_knn():
    rng = np.random.default_rng(0)
    y = np.tile(np.arange(3), 40)
    z = np.c_[10.0 * y, rng.normal(size=(120, 3))]          # class information along one axis
    proj, ratio = lf.pca_2d(z)
    assert proj.shape == (120, 2) and ratio[0] >= ratio[1] and ratio.sum() <= 1 + 1e-9
    assert lf.knn_accuracy(z, y, k=5) == 1.0
    assert lf.knn_accuracy(rng.normal(size=(120, 2)), y, k=5) < 0.7
    one_unit, r1 = lf.pca_2d(z[:, :1])
    assert one_unit.shape == (120, 2) and r1[1] == 0.0
    with pytest.raises(ValueError, match="shape"):
        lf.pca_2d(np.zeros(5))
    with pytest.raises(ValueError, match="points"):
        lf.knn_accuracy(z, y[:10])
    with pytest.raises(ValueError, match="k must"):
        lf.knn_accuracy(z, y, k=100)


# --- the shipped group ----------------------------------------------------------------------------------------------
def test_functions_work_on_the_shipped_group(shipped):
    run = lf.get_run(shipped, "lvae-bn-wu", 5)
    m = lf.unit_kl_map(run["history"])
    assert m.log_kl.shape == (sum(lf.layer_sizes(run)), len(run["history"])) and m.sizes == (64, 32, 16, 8, 4)
    rows = lf.bounds_table(shipped)
    assert len(rows) == 12
    for r in rows:
        rec = lf.get_run(shipped, r["variant"], r["depth"])
        assert r["epochs"] == rec["epochs_done"] and r["test_L5000"] is not None and r["test_L5000"] > r["test_L1"]
        assert 0 < r["temperature"] <= 1
    table = lf.active_units_table(shipped, depth=5)
    for row, v in zip(table, lf.VARIANTS):
        active = lf.active_by_layer(lf.get_run(shipped, v, 5))
        assert all(0 <= a <= s for a, s in zip(active, (64, 32, 16, 8, 4)))
        assert row["all layers"] == f"{sum(active)} / 124"
    claims = lf.check_claims(shipped)
    assert len(claims) == 12 and all(isinstance(c.holds, bool) and c.evidence for c in claims)


@pytest.mark.parametrize("machine, label", [
    ("cuda: NVIDIA H200, 16 cores, torch 2.11.0+cu130, 1 threads", "GPU (NVIDIA H200)"),
    ("cpu: AMD EPYC, 2 cores, torch 2.13.0+cpu, 1 threads", "CPU (AMD EPYC), 1 thread"),
    ("cpu: Apple M2, 8 cores, torch 2.13.0, 4 threads", "CPU (Apple M2), 4 threads"),
    ("mps: Apple M2, 8 cores, torch 2.13.0, 1 threads", "mps (Apple M2)"),
])
def test_machine_name(machine, label):
    assert lf.machine_name(machine) == label


def test_machine_name_rejects_other_records():
    with pytest.raises(ValueError, match="machine record"):
        lf.machine_name("H200")


def test_test_bounds_moves_a_subset_evaluation_by_the_subset_offset():
    run = fake_run("lvae-bn-wu", 5, test_elbo=-86.0, l5000=-82.0)
    assert lf.test_bounds(run) == {"n_test": 10_000, "subset_L5000": -82.0, "subset_offset": 0.0, "sem": None,
                                   "test_L1": -86.0, "test_L5000": -82.0}
    run["eval"].update({"n_test": 1000, "test_log_likelihood_sem": 0.7})
    run["history"][-1]["test_elbo"] = -87.5          # the whole test set is 1.5 nats harder than the first 1000
    b = lf.test_bounds(run)
    assert b["test_L1"] == -87.5 and b["subset_offset"] == pytest.approx(-1.5)
    assert b["test_L5000"] == pytest.approx(-83.5) and b["subset_L5000"] == -82.0 and b["sem"] == 0.7
    row = next(r for r in lf.bounds_table({**fake_group(), "lvae-bn-wu-d5": run}) if r["variant"] == "lvae-bn-wu"
               and r["depth"] == 5)
    assert row["test_L5000"] == pytest.approx(-83.5) and row["test_L1"] == -87.5 and row["n_test"] == 1000
    del run["history"][-1]["test_elbo"]
    with pytest.raises(ValueError, match="without --n-test"):
        lf.test_bounds(run)


def test_paired_difference_is_the_mean_and_standard_error_of_the_per_digit_differences():
    a, b = fake_run("lvae-bn-wu", 5), fake_run("vae-bn-wu", 5)
    rng = np.random.default_rng(0)
    hard = rng.normal(-85.0, 20.0, size=200)               # a digit's difficulty, shared by both runs
    a["eval"].update({"iw": 5000, "test_log_likelihood_per_point": (hard + 0.5 + rng.normal(0, 1, 200)).tolist()})
    b["eval"].update({"iw": 5000, "test_log_likelihood_per_point": hard.tolist()})
    d = np.asarray(a["eval"]["test_log_likelihood_per_point"]) - hard
    out = lf.paired_difference(a, b)
    assert out["n"] == 200 and out["mean"] == pytest.approx(d.mean())
    assert out["sem"] == pytest.approx(d.std(ddof=1) / np.sqrt(200))
    # pairing removes the shared difficulty: the unpaired standard error is about twenty times larger
    assert out["sem"] < np.std(hard, ddof=1) / np.sqrt(200) / 10
    assert lf.paired_difference(b, a)["mean"] == pytest.approx(-d.mean())
    b["eval"]["test_log_likelihood_per_point"] = hard[:100].tolist()
    with pytest.raises(ValueError, match="same --iw and --n-test"):
        lf.paired_difference(a, b)
    del b["eval"]["test_log_likelihood_per_point"]
    with pytest.raises(ValueError, match="--per-point"):
        lf.paired_difference(a, b)
