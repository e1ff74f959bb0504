"""Reading training records: when a run passed an error threshold, and results tables built from ``metrics.json``.

Every number the book reports about a training run is derived here from the per-epoch history that ``fit`` returns
(and that ``python -m dgmlab train`` stores in ``metrics.json``), never typed in by hand. Chapter 4 uses it for the
learning curves and for the comparison with the thesis' Table 4.1 (Maaløe, 2018, §4.2).

A *history* is a list of per-epoch dicts with at least ``"epoch"`` and ``"time_s"`` (cumulative training seconds) and,
on the epochs that were evaluated, a metric such as ``"test_error"`` (in %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

THESIS_TABLE_4_1: dict[str, dict[str, str]] = {
    # Maaløe (2018), Table 4.1 (= Appendix A, Table 2, plus the M2 row). Test error in %, quoted verbatim.
    # M1+TSVM, M2, M1+M2 from Kingma et al. (2014), VAT from Miyato et al. (2015), Ladder from Rasmus et al. (2015).
    "M1+TSVM": {"MNIST 100": "11.82 (±0.25)", "SVHN 1000": "55.33 (±0.11)", "NORB 1000": "18.79 (±0.05)"},
    "M2": {"MNIST 100": "11.97 (±1.71)", "SVHN 1000": "–", "NORB 1000": "–"},
    "M1+M2": {"MNIST 100": "3.33 (±0.14)", "SVHN 1000": "36.02 (±0.10)", "NORB 1000": "–"},
    "VAT": {"MNIST 100": "2.12", "SVHN 1000": "24.63", "NORB 1000": "9.88"},
    "Ladder network": {"MNIST 100": "1.06 (±0.37)", "SVHN 1000": "–", "NORB 1000": "–"},
    "ADGM": {"MNIST 100": "0.96 (±0.02)", "SVHN 1000": "22.86", "NORB 1000": "10.06 (±0.05)"},
    "SDGM": {"MNIST 100": "1.32 (±0.07)", "SVHN 1000": "16.61 (±0.24)", "NORB 1000": "9.40 (±0.04)"},
}
"""The thesis' semi-supervised benchmark (Table 4.1) as printed; the authors' own M2 reached about 9.5 % (§4.1)."""


@dataclass(frozen=True)
class Crossing:
    """The first evaluated epoch at which a metric went below a threshold.

    Attributes:
        threshold: the threshold (same unit as the metric, e.g. % error).
        epoch: the first epoch whose value is strictly below ``threshold``, or ``None`` if none was.
        time_s: cumulative training time (seconds) at the end of that epoch, or ``None``.
        value: the metric at that epoch, or ``None``.
        epochs_seen: how many epochs the history holds (for "not reached within N epochs").
    """

    threshold: float
    epoch: int | None
    time_s: float | None
    value: float | None
    epochs_seen: int

    @property
    def reached(self) -> bool:
        return self.epoch is not None

    def describe(self, unit: str = "%") -> str:
        """``"epoch 12 (3.4 min)"`` or ``"not reached in 40 epochs"``."""
        if not self.reached:
            return f"not reached in {plural(self.epochs_seen, 'epoch')}"
        return f"epoch {self.epoch} ({format_duration(self.time_s)})"


def _check_history(history: Sequence[dict], key: str) -> None:
    if not isinstance(history, (list, tuple)):
        raise TypeError(f"history must be a list of per-epoch dicts (from fit or metrics.json['history']), "
                        f"got {type(history).__name__}")
    for i, record in enumerate(history):
        if not isinstance(record, dict) or "epoch" not in record:
            raise ValueError(f"history[{i}] is not a per-epoch record with an 'epoch' key: {record!r}")
    if history and not any(key in r for r in history):
        keys = sorted({k for r in history for k in r})
        raise KeyError(f"no epoch of the history records {key!r}; recorded keys: {keys}")


def evaluated(history: Sequence[dict], key: str = "test_error") -> list[tuple[int, float, float | None]]:
    """``(epoch, value, time_s)`` for every epoch that recorded ``key`` (finite values only)."""
    _check_history(history, key)
    out = []
    for r in history:
        v = r.get(key)
        if v is not None and math.isfinite(float(v)):
            out.append((int(r["epoch"]), float(v), None if r.get("time_s") is None else float(r["time_s"])))
    return out


def first_below(history: Sequence[dict], threshold: float, key: str = "test_error") -> Crossing:
    """The first epoch whose ``key`` is strictly below ``threshold`` (e.g. test error under 2 %)."""
    for epoch, value, time_s in evaluated(history, key):
        if value < threshold:
            return Crossing(float(threshold), epoch, time_s, value, len(history))
    return Crossing(float(threshold), None, None, None, len(history))


def thresholds_reached(history: Sequence[dict], thresholds: Iterable[float] = (5.0, 3.0, 2.0),
                       key: str = "test_error") -> dict[float, Crossing]:
    """:func:`first_below` for several thresholds: ``{threshold: Crossing}``."""
    return {float(t): first_below(history, t, key) for t in thresholds}


def best(history: Sequence[dict], key: str = "test_error", mode: str = "min") -> tuple[int, float, float | None]:
    """``(epoch, value, time_s)`` of the best evaluated epoch (``mode="min"`` for errors, ``"max"`` for bounds)."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    points = evaluated(history, key)
    if not points:
        raise ValueError(f"the history holds no evaluated {key!r} (it has {len(history)} epochs)")
    pick = min if mode == "min" else max
    return pick(points, key=lambda p: p[1])


def plural(n: int, word: str) -> str:
    """``plural(1, "epoch") == "1 epoch"``, ``plural(20, "epoch") == "20 epochs"``."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def format_duration(seconds: float | None) -> str:
    """Seconds as ``"45 s"``, ``"3.4 min"`` or ``"2.1 h"``."""
    if seconds is None:
        return "–"
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {seconds}")
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


SESSION_KEYS = ("command", "epochs_done", "device", "machine", "wall_clock_s")


def sessions_of(metrics: dict) -> list[dict]:
    """The training sessions of a run's ``metrics.json``; a file written before sessions were recorded (or by a run
    that was never resumed) is one session, described by its top-level fields."""
    return list(metrics.get("sessions") or [{key: metrics.get(key) for key in SESSION_KEYS}])


def run_summary(metrics: dict, key: str = "test_error", thresholds: Iterable[float] = (5.0, 3.0, 2.0)) -> dict:
    """One row describing a CLI run from its ``metrics.json`` dict.

    Returns a dict with ``model``, ``command``, ``seed``, ``epochs``, ``final`` (the last evaluated ``key``),
    ``best``/``best_epoch``, ``train_time_s`` (cumulative training time), ``wall_clock_s``, ``device``, ``machine``,
    ``sessions`` (every command that trained the run, more than one if it was resumed) and ``crossings``
    (``{threshold: Crossing}``).
    """
    missing = {"history", "command", "seed"} - set(metrics)
    if missing:
        raise KeyError(f"metrics.json lacks {sorted(missing)}; it must be the file written by `python -m dgmlab train`")
    history = metrics["history"]
    points = evaluated(history, key)
    if not points:
        raise ValueError(f"run {metrics.get('command')!r} holds no evaluated {key!r} yet ({len(history)} epochs)")
    b_epoch, b_value, _ = best(history, key)
    last_epoch, last_value, _ = points[-1]
    return {
        "model": metrics.get("model"),
        "command": metrics["command"],
        "seed": metrics["seed"],
        "epochs": len(history),
        "final": last_value,
        "final_epoch": last_epoch,
        "best": b_value,
        "best_epoch": b_epoch,
        "train_time_s": float(history[-1].get("time_s", metrics.get("train_time_s", 0.0))),
        "wall_clock_s": metrics.get("wall_clock_s"),
        "device": metrics.get("device"),
        "machine": metrics.get("machine"),
        "sessions": sessions_of(metrics),
        "crossings": thresholds_reached(history, thresholds, key),
    }


def results_rows(runs: dict[str, dict], key: str = "test_error", thresholds: Iterable[float] = (5.0, 3.0, 2.0),
                 reference: dict[str, str] | None = None) -> list[dict]:
    """Table rows (for :func:`dgmlab.plotting.markdown_table`) for several runs ``{label: metrics.json dict}``.

    Columns: the label, the reference number (e.g. from :data:`THESIS_TABLE_4_1`) if given, the final and best error,
    epochs, training time, one column per threshold, seed and device.
    """
    thresholds = tuple(float(t) for t in thresholds)
    rows = []
    for label, metrics in runs.items():
        s = run_summary(metrics, key, thresholds)
        row = {"model": label}
        if reference is not None:
            row["thesis (%)"] = reference.get(label, "–")
        row.update({"ours, last epoch (%)": s["final"], "best (%) [epoch]": f"{s['best']:.2f} [{s['best_epoch']}]",
                    "epochs": s["epochs"], "training time": format_duration(s["train_time_s"])})
        for t in thresholds:
            row[f"< {t:g} %"] = s["crossings"][t].describe()
        row.update({"seed": s["seed"], "device": s["device"]})
        rows.append(row)
    return rows


def seed_summary(runs: Sequence[dict], key: str = "test_error") -> dict:
    """Mean and spread of the final ``key`` over runs that differ only by their seed (``metrics.json`` dicts).

    Returns ``{"runs", "seeds", "values", "mean", "std", "min", "max", "epochs", "mean_time_s"}``; ``std`` is the
    sample standard deviation (``n - 1``), 0 for a single run. Runs with different epochs are refused, since their
    final values would not be comparable."""
    if not runs:
        raise ValueError("seed_summary needs at least one run")
    epochs = {len(r["history"]) for r in runs}
    if len(epochs) != 1:
        raise ValueError(f"the runs have different lengths ({sorted(epochs)} epochs); compare runs of equal length")
    values = [float(r["final"][key]) for r in runs]
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"runs": n, "seeds": [r["seed"] for r in runs], "values": values, "mean": mean, "std": std,
            "min": min(values), "max": max(values), "epochs": epochs.pop(),
            "mean_time_s": sum(r["train_time_s"] for r in runs) / n}


VERDICTS = ("reproduced", "partly", "not yet")


def verdict(ours: float, thesis: float, spread: float = 0.0, claim_holds: bool | None = None,
            tolerance: float = 0.5) -> str:
    """A verdict on one thesis number (errors in %, lower is better).

    ``reproduced`` when ours is at most ``thesis + max(2 * spread, tolerance)``, i.e. within twice the thesis' own
    spread over runs or half a percentage point, whichever is larger; otherwise ``partly`` when the qualitative claim
    that goes with the number holds in our runs (``claim_holds``, e.g. "the ADGM is ahead of M2 at equal epochs"),
    and ``not yet`` when it does not or was not checked."""
    if ours <= thesis + max(2 * spread, tolerance):
        return "reproduced"
    return "partly" if claim_holds else "not yet"


def thesis_number(cell: str) -> tuple[float, float]:
    """``"0.96 (±0.02)"`` -> ``(0.96, 0.02)``; ``"2.12"`` -> ``(2.12, 0.0)``, as printed in Table 4.1."""
    parts = cell.replace("(", " ").replace(")", " ").replace("±", " ").split()
    if not parts or parts[0] in ("–", "-"):
        raise ValueError(f"no number in the table cell {cell!r}")
    return float(parts[0]), float(parts[1]) if len(parts) > 1 else 0.0
