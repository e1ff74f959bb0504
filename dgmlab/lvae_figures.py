"""Figures, tables and checks of the Ladder VAE page (book chapter 5.1; thesis section 5.1.1, Figs. 5.2 and 5.3 and
Table 5.1; Sønderby et al. 2016, Figs. 3 and 4), computed from shipped training records, never typed in by hand.

The input is the run group ``lvae-variants`` (``dgmlab.pretrained.run_group("lvae-variants")``): one ``metrics.json``
dict per variant and depth, keyed ``"{variant}-d{depth}"`` (e.g. ``"lvae-bn-wu-d5"``), each with

* ``history``: one dict per epoch with ``train_elbo``, ``test_elbo`` (``L_1``), ``train_temperature`` and, per latent
  layer ``i``, ``test_unit_kl_layer{i}`` (the KL of every unit averaged over the test set: the data of Fig. 5.2);
* ``eval``: the evaluation of the final checkpoint by ``python -m dgmlab eval ... --iw 5000``
  (``test_log_likelihood_iw5000`` = ``L_5000``, ``test_elbo``, ``test_active_units_layer{i}``);
* ``config`` (``z_dims``, ``depth``), ``epochs_done``, ``train_time_s``, ``command`` and ``machine``.

Functions here only read, reshape and draw those records; the models and the bounds live in
:mod:`dgmlab.models.hvae` and :mod:`dgmlab.models.lvae`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

VARIANTS: tuple[str, ...] = ("vae", "vae-bn", "vae-bn-wu", "lvae-bn-wu")
"""The four models of thesis Figs. 5.2 and 5.3, in the thesis' order."""

VARIANT_NAMES: dict[str, str] = {"vae": "VAE", "vae-bn": "VAE+BN", "vae-bn-wu": "VAE+BN+WU",
                                 "lvae-bn-wu": "LVAE+BN+WU"}
"""Display names: BN = batch normalisation, WU = KL warm-up."""

VARIANT_COLOURS: dict[str, str] = {"vae": "tab:gray", "vae-bn": "tab:blue", "vae-bn-wu": "tab:orange",
                                   "lvae-bn-wu": "tab:red"}

DEPTHS: tuple[int, ...] = (1, 3, 5)
"""Numbers of latent layers of the shipped runs."""

KL_FLOOR = 1e-3
"""Per-unit KL values below this (nats) are drawn at this value in the log-scale heat maps. The bottom-up VAE's
per-unit KL of every layer but the top is a one-sample Monte Carlo estimate and can be slightly negative for a
collapsed unit; a logarithm needs a floor."""

BOUNDS = ("train_L1", "test_L1", "test_L5000")
"""The three panels of Fig. 5.3."""

BOUND_LABELS = {"train_L1": r"train $\mathcal{L}_1$", "test_L1": r"test $\mathcal{L}_1$",
                "test_L5000": r"test $\mathcal{L}_{5000}$"}


MNIST_TEST = 10_000   # digits in the MNIST test set: what an evaluation without --n-test covers


def run_name(variant: str, depth: int) -> str:
    """The key of a run in the group: ``run_name("lvae-bn-wu", 5) == "lvae-bn-wu-d5"``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    return f"{variant}-d{depth}"


def get_run(runs: Mapping[str, dict], variant: str, depth: int) -> dict:
    """The record of one variant at one depth, with a clear error when the group lacks it."""
    key = run_name(variant, depth)
    if key not in runs:
        raise ValueError(f"the run group has no run {key!r}; it holds {', '.join(sorted(runs)) or 'nothing'} "
                         "(train it with scripts/lvae_runs.sh or scripts/gpu_session.py)")
    return runs[key]


def machine_name(machine: str) -> str:
    """A short label for a run's ``machine`` record (:func:`dgmlab.runtime.machine_description`), for tables:
    ``"cuda: NVIDIA H200, 16 cores, torch 2.11, 1 threads"`` -> ``"GPU (NVIDIA H200)"``,
    ``"cpu: AMD EPYC, 2 cores, torch 2.13, 1 threads"`` -> ``"CPU (AMD EPYC), 1 thread"``."""
    if not isinstance(machine, str) or ":" not in machine:
        raise ValueError(f"not a machine record of dgmlab.runtime.machine_description: {machine!r}")
    kind, _, rest = machine.partition(":")
    kind, parts = kind.strip(), [p.strip() for p in rest.split(",")]
    if kind != "cpu":
        return f"{'GPU' if kind == 'cuda' else kind} ({parts[0]})"
    threads = next((p.split()[0] for p in parts if p.endswith("threads")), None)
    label = f"CPU ({parts[0]})"
    return f"{label}, {threads} thread{'s' if threads != '1' else ''}" if threads else label


def layer_sizes(run: dict) -> tuple[int, ...]:
    """Latent units per layer of a run, bottom (``z1``) first, from its ``config``."""
    cfg = run.get("config", {})
    if "z_dims" not in cfg:
        raise ValueError("the record has no config['z_dims']; is it a metrics.json of an hvae or lvae run?")
    return tuple(cfg["z_dims"][:cfg.get("depth")])


def final_record(run: dict) -> dict:
    """The evaluation of the final checkpoint: ``eval`` (``python -m dgmlab eval``) where present, else the last
    epoch of the history."""
    if run.get("eval"):
        return run["eval"]
    if not run.get("history"):
        raise ValueError("the record has neither an 'eval' section nor a history")
    return run["history"][-1]


# ------------------------------------------------------------------------------------------------ Fig. 5.2
@dataclass
class UnitKLMap:
    """The data of one panel of thesis Fig. 5.2: ``log10`` of the per-unit KL against the epoch.

    Attributes:
        log_kl: ``(n_units, n_epochs)``; rows are grouped by layer, ``z1`` first, and sorted within each layer by the
            KL after the last epoch, largest first.
        epochs: the epoch of every column (1-based, as in the history).
        layers: layer names, ``("z1", ..., "zL")``.
        sizes: units per layer.
        order: per layer, the unit indices in row order (``order[i][0]`` is the unit with the largest final KL).
        final_kl: per layer, the KL after the last epoch in row order (nats, not clipped).
        floor: the clipping value of the logarithm (nats).
        unrecorded: how many leading epochs have no per-unit KL (their columns are NaN): runs begun before the
            training loop recorded it, and resumed after.
    """

    log_kl: np.ndarray
    epochs: np.ndarray
    layers: tuple[str, ...]
    sizes: tuple[int, ...]
    order: list[np.ndarray] = field(repr=False)
    final_kl: list[np.ndarray] = field(repr=False)
    floor: float = KL_FLOOR
    unrecorded: int = 0

    @property
    def starts(self) -> np.ndarray:
        """Index of the first row of every layer block."""
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(int)


def unit_kl_map(history: Sequence[dict], floor: float = KL_FLOOR) -> UnitKLMap:
    """Assemble the matrix of thesis Fig. 5.2 for one model from its per-epoch history.

    From the first epoch that records ``test_unit_kl_layer1 .. test_unit_kl_layerL`` on, every epoch must record them
    with the same number of units; epochs before it (a run resumed with a newer ``dgmlab``) become NaN columns.
    Values are clipped below at ``floor`` before the base-10 logarithm; rows are sorted within each layer by the last
    epoch's KL, largest first (reproduction notes L3: per-unit KL averaged over the test set).
    """
    if not isinstance(floor, (int, float)) or not floor > 0:
        raise ValueError(f"floor must be a positive number of nats, got {floor!r}")
    if not isinstance(history, (list, tuple)) or not history:
        raise ValueError("history must be a non-empty list of per-epoch dicts (metrics.json['history'])")
    recorded = [t for t, r in enumerate(history) if isinstance(r, dict) and "test_unit_kl_layer1" in r]
    if not recorded:
        raise ValueError("the history records no per-unit KL ('test_unit_kl_layer1' in no epoch); it needs runs "
                         "trained with the per-unit KL in the history (dgmlab >= the GPU-ready loop)")
    start = recorded[0]
    first = history[start]
    n_layers = 0
    while f"test_unit_kl_layer{n_layers + 1}" in first:
        n_layers += 1
    sizes = tuple(len(first[f"test_unit_kl_layer{i + 1}"]) for i in range(n_layers))
    blocks = [np.full((s, len(history)), np.nan) for s in sizes]
    for t in range(start, len(history)):
        record = history[t]
        for i, size in enumerate(sizes):
            values = record.get(f"test_unit_kl_layer{i + 1}") if isinstance(record, dict) else None
            if values is None or len(values) != size:
                got = "nothing" if values is None else f"{len(values)} units"
                raise ValueError(f"history[{t}] records {got} for layer z{i + 1}, expected {size} units as in "
                                 f"epoch {start + 1}")
            blocks[i][:, t] = values
    order = [np.argsort(-b[:, -1], kind="stable") for b in blocks]
    sorted_blocks = [b[o] for b, o in zip(blocks, order)]
    log_kl = np.log10(np.clip(np.concatenate(sorted_blocks), floor, None))   # NaN stays NaN: not recorded
    epochs = np.array([int(r.get("epoch", t + 1)) if isinstance(r, dict) else t + 1 for t, r in enumerate(history)])
    return UnitKLMap(log_kl, epochs, tuple(f"z{i + 1}" for i in range(n_layers)), sizes, order,
                     [b[:, -1] for b in sorted_blocks], float(floor), start)


def plot_unit_kl_maps(maps: Mapping[str, UnitKLMap], titles: Mapping[str, str] | None = None, vmax: float | None = None,
                      threshold: float = 0.01):
    """Draw thesis Fig. 5.2: one panel per model (``maps``), units as rows in one block per layer, epochs as columns,
    colour = ``log10 KL``; white = at or below the floor (a collapsed unit); grey = not recorded. Returns the figure.

    ``threshold`` (nats; the active-unit threshold) is marked on the colour bar.
    """
    import matplotlib.pyplot as plt

    if not maps:
        raise ValueError("maps is empty: pass {name: unit_kl_map(history)} for at least one model")
    titles = dict(titles or {})
    lo = math.log10(min(m.floor for m in maps.values()))
    hi = vmax if vmax is not None else max(float(np.nanmax(m.log_kl)) for m in maps.values())
    hi = max(hi, lo + 1e-6)
    fig, axes = plt.subplots(1, len(maps), figsize=(3.3 * len(maps) + 1.2, 6.2), squeeze=False, sharey=True)
    image = None
    for ax, (name, m) in zip(axes[0], maps.items()):
        e0, e1 = float(m.epochs[0]) - 0.5, float(m.epochs[-1]) + 0.5
        cmap = plt.get_cmap("YlGnBu").with_extremes(bad="0.8")   # grey: epochs that recorded no per-unit KL
        image = ax.imshow(m.log_kl, aspect="auto", interpolation="nearest", cmap=cmap, vmin=lo, vmax=hi,
                          extent=(e0, e1, m.log_kl.shape[0] - 0.5, -0.5))
        for start in m.starts[1:]:
            ax.axhline(start - 0.5, color="k", lw=0.8)
        ax.set_title(titles.get(name, name), fontsize=10)
        ax.set_xlabel("epoch")
    first = next(iter(maps.values()))
    centres = first.starts + (np.array(first.sizes) - 1) / 2
    axes[0][0].set_yticks(centres, [f"${n[0]}_{n[1:]}$ ({s})" for n, s in zip(first.layers, first.sizes)])
    axes[0][0].set_ylabel("latent units, sorted by final KL within each layer")
    bar = fig.colorbar(image, ax=axes[0].tolist(), fraction=0.03, pad=0.02)
    bar.set_label(r"$\log_{10}$ KL per unit (nats)")
    if lo < math.log10(threshold) < hi:
        bar.ax.axhline(math.log10(threshold), color="tab:red", lw=1.5)
    return fig


# ------------------------------------------------------------------------------------------------ Fig. 5.3
def bounds_table(runs: Mapping[str, dict], variants: Sequence[str] = VARIANTS,
                 depths: Sequence[int] = DEPTHS) -> list[dict]:
    """One row per variant and depth with the three bounds of thesis Fig. 5.3 and how far each run got.

    Columns: ``variant``, ``name``, ``depth``, ``epochs`` (``epochs_done``), ``temperature`` (the KL temperature of
    the last epoch), ``train_L1`` (the last epoch's training ELBO, averaged over its mini-batches, without the
    temperature), ``test_L1`` and ``test_L5000`` (the final checkpoint on the whole test set, by :func:`test_bounds`;
    ``L_5000`` is ``None`` when it was not evaluated), ``n_test`` (digits behind ``L_5000``) and ``train_time_s``.
    """
    rows = []
    for variant in variants:
        for depth in depths:
            run = get_run(runs, variant, depth)
            if not run.get("history"):
                raise ValueError(f"run {run_name(variant, depth)!r} has an empty history")
            last, test = run["history"][-1], test_bounds(run)
            rows.append({"variant": variant, "name": VARIANT_NAMES[variant], "depth": int(depth),
                         "epochs": int(run.get("epochs_done", len(run["history"]))),
                         "temperature": float(last.get("train_temperature", 1.0)),
                         "train_L1": float(last["train_elbo"]), "test_L1": test["test_L1"],
                         "test_L5000": test["test_L5000"], "n_test": test["n_test"],
                         "train_time_s": float(run.get("train_time_s", float("nan")))})
    return rows


def test_bounds(run: dict, n_full: int = MNIST_TEST) -> dict:
    """Test ``L_1`` and ``L_5000`` of a run's final checkpoint, on the whole test set of ``n_full`` digits.

    An evaluation with 5000 importance samples costs about 0.4 s per digit on one CPU core, so CPU runs are
    evaluated on the first ``n`` test digits only (``eval --n-test``), which need not be typical. Then ``test_L1`` is
    the last epoch's evaluation on the whole test set (the same checkpoint), and ``test_L5000`` is the subset's value
    moved by the subset's ``L_1`` offset, ``L_1(all) - L_1(subset)``: this assumes that ``L_5000 - L_1`` is the same
    on the subset as on the whole set (reproduction notes rn-lvae-cpu-runs). Returned with ``n_test`` (digits behind
    ``L_5000``), ``subset_L5000``, ``subset_offset`` (0 for a whole-set evaluation) and ``sem`` (the standard error of
    the subset's mean, where recorded); ``test_L5000`` is None when the run has no ``L_5000``.
    """
    final, last = final_record(run), run["history"][-1]
    n = int(final.get("n_test") or n_full)
    ll = final.get("test_log_likelihood_iw5000")
    out = {"n_test": n, "subset_L5000": None if ll is None else float(ll), "subset_offset": 0.0,
           "sem": final.get("test_log_likelihood_sem"), "test_L1": float(final["test_elbo"]),
           "test_L5000": None if ll is None else float(ll)}
    if n < n_full:
        if "test_elbo" not in last:
            raise ValueError(f"the evaluation used {n} of {n_full} test digits and the last epoch has no test_elbo on "
                             "the whole set to compare with; evaluate on the whole test set (eval without --n-test)")
        out["subset_offset"] = float(last["test_elbo"]) - float(final["test_elbo"])
        out["test_L1"] = float(last["test_elbo"])
        if ll is not None:
            out["test_L5000"] = float(ll) + out["subset_offset"]
    return out


def paired_difference(run: dict, other: dict) -> dict:
    """How far ``run``'s log-likelihood estimate is ahead of ``other``'s, digit by digit: both evaluated on the same
    test points with the same number of importance samples and ``eval --per-point``.

    The two runs' estimates vary together from digit to digit (a hard digit is hard for both), so the standard error
    of the mean *difference* is far smaller than either run's own ``sem``. Returns ``mean`` (nats, positive: ``run``
    is ahead), ``sem`` and ``n``.
    """
    a, b = final_record(run), final_record(other)
    for name, ev in (("run", a), ("other", b)):
        if "test_log_likelihood_per_point" not in ev:
            raise ValueError(f"{name} has no per-point log-likelihoods; evaluate it with "
                             "`python -m dgmlab eval CHECKPOINT --per-point` (same --iw and --n-test for both runs)")
    if a.get("iw") != b.get("iw") or len(a["test_log_likelihood_per_point"]) != len(b["test_log_likelihood_per_point"]):
        raise ValueError(f"the runs were evaluated differently (iw {a.get('iw')} on "
                         f"{len(a['test_log_likelihood_per_point'])} points, iw {b.get('iw')} on "
                         f"{len(b['test_log_likelihood_per_point'])}); evaluate both with the same --iw and --n-test")
    d = np.asarray(a["test_log_likelihood_per_point"], float) - np.asarray(b["test_log_likelihood_per_point"], float)
    sem = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"mean": float(d.mean()), "sem": sem, "n": len(d)}


def plot_bounds_by_depth(axes, rows: Sequence[dict], thesis: Mapping[str, Sequence[tuple]] | None = None):
    """Draw thesis Fig. 5.3 on three axes (train ``L_1``, test ``L_1``, test ``L_5000`` against the number of latent
    layers), one line per variant, each point labelled with the epochs its run reached.

    ``thesis`` optionally maps a bound (``"train_L1"``, ``"test_L1"``, ``"test_L5000"``) to reference points
    ``(depth or None, value, label)``: a star at that depth, or a dotted horizontal line when the depth is None.
    """
    if len(axes) != len(BOUNDS):
        raise ValueError(f"need {len(BOUNDS)} axes (one per bound: {', '.join(BOUNDS)}), got {len(axes)}")
    if not rows:
        raise ValueError("rows is empty: pass bounds_table(runs)")
    thesis = dict(thesis or {})
    for ax, bound in zip(axes, BOUNDS):
        for variant in dict.fromkeys(r["variant"] for r in rows):
            pts = sorted((r["depth"], r[bound], r["epochs"]) for r in rows
                         if r["variant"] == variant and r[bound] is not None)
            if not pts:
                continue
            d, v, ep = zip(*pts)
            colour = VARIANT_COLOURS.get(variant)
            ax.plot(d, v, "-o", color=colour, label=VARIANT_NAMES.get(variant, variant), ms=5)
            for di, vi, ei in pts:
                ax.annotate(f"{ei}", (di, vi), textcoords="offset points", xytext=(5, 3), fontsize=7, color=colour)
        for depth, value, label in thesis.get(bound, ()):
            if depth is None:
                ax.axhline(value, color="k", ls=":", lw=1, label=label)
            else:
                ax.plot([depth], [value], "*", color="k", ms=11, label=label)
        ax.set(xlabel="number of latent layers $L$", ylabel="nats per test image" if bound != "train_L1" else
               "nats per training image", title=BOUND_LABELS[bound])
        ax.set_xticks(sorted({r["depth"] for r in rows}))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return axes


# ------------------------------------------------------------------------------------------------ active units
def active_by_layer(run: dict) -> list[int]:
    """Active units per layer of the final checkpoint (``eval``, else the last epoch), bottom layer first."""
    final = final_record(run)
    out = []
    for i in range(len(layer_sizes(run))):
        key = f"test_active_units_layer{i + 1}"
        if key not in final:
            raise ValueError(f"the final record has no {key!r}")
        out.append(int(final[key]))
    return out


def active_units_table(runs: Mapping[str, dict], depth: int = 5, variants: Sequence[str] = VARIANTS) -> list[dict]:
    """One row per variant at ``depth``: epochs, last KL temperature, active units of every layer (``"k / d"``), the
    total, and the KL of every layer of the final checkpoint (nats per test image)."""
    rows = []
    for variant in variants:
        run = get_run(runs, variant, depth)
        sizes, active, final = layer_sizes(run), active_by_layer(run), final_record(run)
        row = {"model": VARIANT_NAMES[variant], "epochs": int(run.get("epochs_done", len(run["history"]))),
               "temperature": float(run["history"][-1].get("train_temperature", 1.0))}
        row.update({f"z{i + 1}": f"{a} / {s}" for i, (a, s) in enumerate(zip(active, sizes))})
        row["all layers"] = f"{sum(active)} / {sum(sizes)}"
        row.update({f"KL z{i + 1}": float(final[f"test_kl_layer{i + 1}"]) for i in range(len(sizes))})
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ the claims
@dataclass
class Claim:
    """One qualitative statement of the thesis, checked on our runs.

    Attributes:
        source: where the thesis makes it (e.g. ``"Fig. 5.2"``).
        claim: the statement.
        holds: whether our runs agree.
        evidence: the numbers that decided it.
    """

    source: str
    claim: str
    holds: bool
    evidence: str


def _fmt(values) -> str:
    return "[" + ", ".join(str(v) for v in values) + "]"


def _peak_active_above_z1(run: dict, depth: int) -> tuple[int, int]:
    """The largest number of active units in ``z2 .. z_depth`` over a run's history, and the first epoch with it."""
    keys = [f"test_active_units_layer{i + 1}" for i in range(1, depth)]
    counts = [(sum(int(h[k]) for k in keys), int(h["epoch"])) for h in run["history"] if all(k in h for k in keys)]
    if not counts:
        raise ValueError(f"the history records no active units per layer ({keys[0]!r} in no epoch)")
    return max(counts, key=lambda c: (c[0], -c[1]))


def _test_l1_at(run: dict, epoch: int) -> float:
    """The test ``L_1`` a run recorded after ``epoch`` (its per-epoch evaluation on the whole test set)."""
    for h in run["history"]:
        if int(h["epoch"]) == epoch:
            return float(h["test_elbo"])
    raise ValueError(f"the run's history has no epoch {epoch}: it records epochs "
                     f"{run['history'][0]['epoch']}..{run['history'][-1]['epoch']}")


def _l1_by_depth(runs: Mapping[str, dict], variant: str, depths: Sequence[int]) -> tuple[int, dict[int, float]]:
    """The test ``L_1`` of one variant at every depth, read at the last epoch that all of its runs reached.

    Runs of different lengths are compared at that epoch: a longer run would otherwise gain from its extra epochs,
    not from its layers. Returns ``(epoch, {depth: L_1})``."""
    depth_runs = {d: get_run(runs, variant, d) for d in sorted(depths)}
    common = min(int(r["history"][-1]["epoch"]) for r in depth_runs.values())
    return common, {d: _test_l1_at(r, common) for d, r in depth_runs.items()}


def check_claims(runs: Mapping[str, dict], depth: int = 5, depths: Sequence[int] = DEPTHS,
                 tolerance: float = 0.5) -> list[Claim]:
    """The thesis' qualitative claims about Figs. 5.2 and 5.3 (section 5.1.1; Sønderby et al. section 3), checked on
    the final checkpoints of the group. ``depth`` is the depth of the Fig. 5.2 comparison (at least 3).
    ``tolerance`` (nats) separates a gain from a tie: a deeper model gains only when its bound is more than
    ``tolerance`` above the shallower one's. The claims about depth use the test ``L_1``, as the paper states them
    (Sønderby et al. 2016, section 3.1, on their Fig. 3b), recorded at the last epoch that every depth of the variant
    reached; the evidence adds ``L_5000`` where the runs have it."""
    if depth < 3:
        raise ValueError(f"the Fig. 5.2 claims are about layers above z2: depth must be at least 3, got {depth}")
    au = {v: active_by_layer(get_run(runs, v, depth)) for v in VARIANTS}
    size = layer_sizes(get_run(runs, "vae", depth))
    table = {(r["variant"], r["depth"]): r for r in bounds_table(runs, VARIANTS, depths)}
    claims = []

    upper = au["vae"][2:]
    claims.append(Claim("Fig. 5.2", f"the plain VAE leaves every layer above z2 inactive (depth {depth})",
                        all(a == 0 for a in upper), f"VAE active units z3..z{depth}: {_fmt(upper)}"))
    claims.append(Claim("Fig. 5.2", "the plain VAE keeps only a few active units in z2 (under a quarter)",
                        au["vae"][1] < size[1] / 4, f"VAE: {au['vae'][1]} of {size[1]} units of z2 active"))
    claims.append(Claim("Fig. 5.2", "batch normalisation activates more units (VAE+BN vs VAE, all layers)",
                        sum(au["vae-bn"]) > sum(au["vae"]),
                        f"active units per layer: VAE+BN {_fmt(au['vae-bn'])}, VAE {_fmt(au['vae'])}"))
    claims.append(Claim("Fig. 5.2", "warm-up activates more units above z1 (VAE+BN+WU vs VAE+BN)",
                        sum(au["vae-bn-wu"][1:]) > sum(au["vae-bn"][1:]),
                        f"active units z2..z{depth}: VAE+BN+WU {sum(au['vae-bn-wu'][1:])}, "
                        f"VAE+BN {sum(au['vae-bn'][1:])}"))
    peaks = {v: _peak_active_above_z1(get_run(runs, v, depth), depth) for v in ("vae-bn-wu", "lvae-bn-wu")}
    claims.append(Claim("Fig. 5.2", "warm-up activates many units early and some are pruned later (units above z1)",
                        all(sum(au[v][1:]) < peak for v, (peak, _) in peaks.items()),
                        "; ".join(f"{VARIANT_NAMES[v]}: {peak} at epoch {epoch}, {sum(au[v][1:])} at the end"
                                  for v, (peak, epoch) in peaks.items())))
    claims.append(Claim("Fig. 5.2", "the LVAE uses every layer", all(a > 0 for a in au["lvae-bn-wu"]),
                        f"LVAE active units per layer: {_fmt(au['lvae-bn-wu'])}"))
    best_vae = [max(au[v][i] for v in VARIANTS[:3]) for i in range(depth)]
    claims.append(Claim("Fig. 5.2", "the LVAE has at least as many active units as any VAE variant in every layer",
                        all(a >= b for a, b in zip(au["lvae-bn-wu"], best_vae)),
                        f"LVAE {_fmt(au['lvae-bn-wu'])}, best VAE variant per layer {_fmt(best_vae)}"))

    def by_depth(values: dict[int, float | None]) -> str:
        return ", ".join(f"L={d}: {v:.2f}" if v is not None else f"L={d}: –" for d, v in values.items())

    shallow, deepest = min(depths), max(depths)
    common, plain = _l1_by_depth(runs, "vae", depths)
    claims.append(Claim("Fig. 5.3", "the plain VAE gains nothing from layers beyond the first (test L_1)",
                        all(plain[d] <= plain[shallow] + tolerance for d in depths if d != shallow),
                        f"VAE test L_1 by depth at epoch {common}, the last one every depth reached: "
                        + by_depth(plain)))
    if 3 in depths and shallow < 3 < deepest:
        common, wu = _l1_by_depth(runs, "vae-bn-wu", depths)
        claims.append(Claim("Fig. 5.3", "VAE+BN+WU gains up to three layers and not beyond (test L_1)",
                            wu[3] > wu[shallow] + tolerance and all(wu[d] <= wu[3] + tolerance for d in depths
                                                                    if d > 3),
                            f"VAE+BN+WU test L_1 by depth at epoch {common}: {by_depth(wu)}; a gain must exceed "
                            f"{tolerance} nats"))
    common, ladder = _l1_by_depth(runs, "lvae-bn-wu", depths)
    steps = list(ladder.items())
    ladder_ll = {d: table["lvae-bn-wu", d]["test_L5000"] for d in ladder}
    claims.append(Claim("Fig. 5.3", "the LVAE improves with every added layer (test L_1)",
                        all(b > a + tolerance for (_, a), (_, b) in zip(steps, steps[1:])),
                        f"LVAE test L_1 by depth at epoch {common}: {by_depth(ladder)} (a gain must exceed "
                        f"{tolerance} nats); test L_5000 of the final checkpoints: {by_depth(ladder_ll)}"))
    deep = {v: table[v, deepest] for v in VARIANTS}
    best_other = max(VARIANTS[:3], key=lambda v: deep[v]["test_L1"])
    claims.append(Claim("Fig. 5.3", f"the LVAE has the tightest test L_1 at depth {max(depths)}",
                        deep["lvae-bn-wu"]["test_L1"] > deep[best_other]["test_L1"],
                        f"LVAE {deep['lvae-bn-wu']['test_L1']:.2f} after {deep['lvae-bn-wu']['epochs']} epochs; "
                        f"best VAE variant {VARIANT_NAMES[best_other]} {deep[best_other]['test_L1']:.2f} after "
                        f"{deep[best_other]['epochs']} epochs"))
    gaps = {v: deep[v]["test_L5000"] - deep[v]["test_L1"] for v in ("vae-bn-wu", "lvae-bn-wu")
            if deep[v]["test_L5000"] is not None}
    claims.append(Claim("Fig. 5.3", f"the LVAE's L_1 lies closer to its L_5000 than that of VAE+BN+WU (depth "
                        f"{max(depths)}): a better posterior approximation",
                        len(gaps) == 2 and gaps["lvae-bn-wu"] < gaps["vae-bn-wu"],
                        "L_5000 - L_1: " + ", ".join(f"{VARIANT_NAMES[v]} {g:.2f}" for v, g in gaps.items())))
    return claims


# ------------------------------------------------------------------------------------------------ Table 5.1
def ll_verdict(ours: float | None, thesis: float, tolerance: float = 0.5, claim_holds: bool | None = None) -> str:
    """A verdict on one thesis log-likelihood (nats, higher is better): ``reproduced`` when ours is at most
    ``tolerance`` nats below the thesis' number; otherwise ``partly`` when the qualitative claim that goes with the
    number holds in our runs, and ``not yet`` when it does not, was not checked, or there is no number of ours."""
    if ours is not None and not math.isfinite(ours):
        raise ValueError(f"ours must be a finite number of nats or None, got {ours!r}")
    if ours is not None and ours >= thesis - tolerance:
        return "reproduced"
    return "partly" if (ours is not None and claim_holds) else "not yet"


def compare_with_thesis(thesis_rows: Sequence[dict], ours: Mapping[tuple, dict],
                        tolerance: float = 0.5) -> list[dict]:
    """Thesis Table 5.1 beside our numbers, with a verdict per row.

    ``thesis_rows``: dicts with ``model``, ``L``, ``IW`` and ``thesis`` (the printed ``<= log p(x)``).
    ``ours``: keyed by ``(model, L, IW)``; each value a dict with ``value`` (our ``L_5000``, or None), ``run`` (what
    produced it), optionally ``claim_holds`` and ``why`` (the reason, shown in the table). Rows without an entry
    get "not run".
    """
    out = []
    for row in thesis_rows:
        missing = [k for k in ("model", "L", "IW", "thesis") if k not in row]
        if missing:
            raise ValueError(f"a thesis row needs model, L, IW and thesis; {row!r} lacks {', '.join(missing)}")
        mine = ours.get((row["model"], row["L"], row["IW"]), {})
        value = mine.get("value")
        out.append({"model": row["model"], "L": row["L"], "IW": row["IW"], "thesis": row["thesis"],
                    "ours": value, "ours - thesis": None if value is None else value - row["thesis"],
                    "our run": mine.get("run", "not run"),
                    "verdict": ll_verdict(value, row["thesis"], tolerance, mine.get("claim_holds")),
                    "why": mine.get("why", "")})
    return out


# ------------------------------------------------------------------------------------------------ latent codes
def pca_2d(z) -> tuple[np.ndarray, np.ndarray]:
    """Project ``z`` (``(n, d)``, ``n >= 2``) onto its first two principal components: ``(projection (n, 2),
    explained-variance ratios (2,))``. A layer with one unit gets a zero second component."""
    z = np.asarray(z, dtype=float)
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"z must have shape (points >= 2, units), got {z.shape}")
    centred = z - z.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[:2].T
    var = s ** 2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(min(2, len(var)))
    if proj.shape[1] < 2:
        proj = np.hstack([proj, np.zeros((len(z), 1))])
        ratio = np.append(ratio, 0.0)
    return proj, ratio


def knn_accuracy(z, y, k: int = 10) -> float:
    """Accuracy of a ``k``-nearest-neighbour classifier (Euclidean, majority vote) fitted on the first half of the
    points and scored on the second half: how much class information a code carries (labels are never used in
    training the model)."""
    z, y = np.asarray(z, dtype=float), np.asarray(y)
    if z.ndim != 2 or y.shape != (len(z),):
        raise ValueError(f"z must be (points, units) and y (points,), got {z.shape} and {y.shape}")
    half = len(z) // 2
    if not 1 <= k <= half:
        raise ValueError(f"k must lie between 1 and half the points ({half}), got {k}")
    train, test = z[:half], z[half:]
    d2 = (test ** 2).sum(1)[:, None] - 2 * test @ train.T + (train ** 2).sum(1)[None, :]
    nearest = np.argpartition(d2, k - 1, axis=1)[:, :k]
    votes = y[:half][nearest]
    classes = np.unique(y)
    counts = (votes[..., None] == classes).sum(1)
    return float((classes[counts.argmax(1)] == y[half:]).mean())


__all__ = ["BOUNDS", "DEPTHS", "KL_FLOOR", "VARIANTS", "VARIANT_NAMES", "Claim", "UnitKLMap", "active_by_layer",
           "active_units_table", "bounds_table", "check_claims", "compare_with_thesis", "final_record", "get_run",
           "knn_accuracy", "layer_sizes", "ll_verdict", "pca_2d", "plot_bounds_by_depth", "plot_unit_kl_maps",
           "run_name", "unit_kl_map"]
