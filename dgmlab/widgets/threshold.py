"""An anomaly-threshold explorer: move a threshold over precomputed scores and watch false alarms and misses.

The rule is the one of :func:`dgmlab.monitoring.threshold_rates`: a minute (a point) is *flagged* when its score
is **below** the threshold. Chapter 6 uses it with the SDGM's unlabelled bound ``U(x)`` as the score (thesis
Fig. 6.1: a minute whose bound is far below what the model saw in training is sent to an operator), but any score
and any "should be flagged" mask will do.

:func:`threshold_explorer` builds, like the latent explorers of :mod:`dgmlab.widgets.explorer`, a kernel-free view
(``"static"``: one self-contained ``<div>`` with a picture of a few days of scores, an SVG overlay and a small
vanilla-JS script; no network, works on the static book page), a live view (``"live"``: ipywidgets, recomputed
with :func:`~dgmlab.monitoring.threshold_rates` in the kernel) or both (``"auto"``).

How the static view stays exact: the slider moves over a fixed, sorted grid of thresholds ``t_0 < ... < t_{G-1}``
(quantiles of the scores plus the marked thresholds). Every point carries the index ``k`` of the first grid
threshold that flags it (``k = #{j: t_j <= score}``), so at slider position ``j`` a point is flagged exactly when
``k <= j``: the script counts integers and never compares rounded floats. ``tests/test_threshold_widget.py`` runs
that script's counting function in node and checks it against ``threshold_rates`` at every grid threshold.
"""

from __future__ import annotations

import html
import json
from typing import Mapping, Sequence

import numpy as np

from dgmlab.widgets.explorer import ExplorerView, _label_colors, resolve_mode
from dgmlab.widgets.images import data_uri, png_bytes
from dgmlab.widgets.static import _CSS, StaticView, _script, new_id

MAX_MARKS = 6
MAX_DAYS = 12
FLAG = "#111111"  # colour of a flagged point's ring and of the threshold line (not a class colour)

_CSS_T = """
.dgmx-t .dgmx-tctl{display:flex;flex-wrap:wrap;align-items:center;gap:8px;margin:.2em 0 .4em}
.dgmx-t input[type=range]{width:min(520px,90%);accent-color:__FLAG__}
.dgmx-t .dgmx-days{position:relative;line-height:0;max-width:100%}
.dgmx-t .dgmx-days img{max-width:100%;height:auto;image-rendering:auto}
.dgmx-t .dgmx-days svg{position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none}
.dgmx-t .dgmx-m{fill:none;stroke:__FLAG__;stroke-width:1.6;display:none}
.dgmx-t .dgmx-m.dgmx-on{display:inline}
.dgmx-t .dgmx-tl{stroke:__FLAG__;stroke-width:1.5;stroke-dasharray:5 3}
.dgmx-t table{border-collapse:collapse;font-size:12px;font-variant-numeric:tabular-nums}
.dgmx-t td,.dgmx-t th{padding:1px 6px;text-align:right;border-bottom:1px solid rgba(128,128,128,.25);
  white-space:nowrap}
.dgmx-t .dgmx-side{flex:0 1 auto;min-width:260px;max-width:100%;flex-direction:row;flex-wrap:wrap;
  align-items:flex-start;gap:8px 16px}
.dgmx-t .dgmx-side .dgmx-help{flex:1 1 100%}
.dgmx-t td:first-child,.dgmx-t th:first-child{text-align:left}
.dgmx-t .dgmx-big{font-size:13px}
.dgmx-t .dgmx-roc line,.dgmx-t .dgmx-roc rect{stroke:#888;fill:none}
.dgmx-t .dgmx-roc polyline{stroke:#333;fill:none;stroke-width:1.5}
.dgmx-t .dgmx-roc circle{fill:__FLAG__}
.dgmx-t .dgmx-roc text{font-size:10px;fill:currentColor}
""".replace("__FLAG__", FLAG)

# The counting core. It reads only the page's data (D.k: first flagging grid index per point, D.a: 1 if the point
# should be flagged, D.c: class index or -1) and is run verbatim by the tests in node, between these markers.
_JS_COUNTS = """
  /*counts>*/
  function dgmxCounts(D, j) {
    var fa = 0, hit = 0, nN = 0, nA = 0, per = [];
    for (var c = 0; c < D.classes.length; c++) per.push(0);
    for (var i = 0; i < D.k.length; i++) {
      var on = D.k[i] <= j;
      if (D.a[i]) { nA++; if (on) hit++; } else { nN++; if (on) fa++; }
      if (on && D.c[i] >= 0) per[D.c[i]]++;
    }
    return {threshold: D.t[j], false_alarms: fa, false_alarm_rate: fa / Math.max(nN, 1), misses: nA - hit,
            miss_rate: (nA - hit) / Math.max(nA, 1), flagged: fa + hit, n_normal: nN, n_anomalous: nA,
            per_class: per};
  }
  /*<counts*/
"""

_JS_VIEW = """
  boot(function (root) {
    var D = JSON.parse(root.querySelector("script.dgmx-data").textContent);
    var slider = root.querySelector("input.dgmx-slider"), out = root.querySelector(".dgmx-readout");
    var rings = root.querySelectorAll(".dgmx-m"), lines = root.querySelectorAll(".dgmx-tl");
    var dot = root.querySelector(".dgmx-roc circle");
    function pct(x) { return (100 * x).toFixed(1) + " %"; }
    function num(v) { var a = Math.abs(v), s = a >= 100 ? a.toFixed(0) : a >= 10 ? a.toFixed(1) : a.toFixed(2);
                      return (v < 0 ? "\\u2212" : "") + s; }
    function set(sel, text) { var e = root.querySelector(sel); if (e) e.textContent = text; }
    function show(j) {
      j = Math.max(0, Math.min(D.t.length - 1, j));
      var r = dgmxCounts(D, j);
      slider.value = String(j);
      out.textContent = "threshold " + num(r.threshold) + " " + D.unit + ": " + r.flagged + " of " +
        (r.n_normal + r.n_anomalous) + " " + D.what + " flagged";
      set(".dgmx-fa", r.false_alarms + " of " + r.n_normal + " (" + pct(r.false_alarm_rate) + ")");
      set(".dgmx-miss", r.misses + " of " + r.n_anomalous + " (" + pct(r.miss_rate) + ")");
      set(".dgmx-hit", (r.n_anomalous - r.misses) + " of " + r.n_anomalous + " (" + pct(1 - r.miss_rate) + ")");
      for (var c = 0; c < D.classes.length; c++) {
        var n = D.class_n[c];
        set(".dgmx-pc" + c, r.per_class[c] + " (" + (n ? pct(r.per_class[c] / n) : "\\u2013") + ")");
      }
      for (var m = 0; m < rings.length; m++) {
        var on = +rings[m].getAttribute("data-k") <= j;
        if (on) rings[m].classList.add("dgmx-on"); else rings[m].classList.remove("dgmx-on");
      }
      for (var p = 0; p < lines.length; p++) {
        var y = D.line_y[p][j];
        lines[p].setAttribute("y1", y); lines[p].setAttribute("y2", y);
      }
      if (dot) { dot.setAttribute("cx", D.roc.x0 + D.roc.w * r.false_alarm_rate);
                 dot.setAttribute("cy", D.roc.y0 + D.roc.h * r.miss_rate); }
      root.setAttribute("data-selected", String(j));
      root.setAttribute("data-counts", JSON.stringify([r.false_alarms, r.misses]));
    }
    slider.addEventListener("input", function () { show(+slider.value); });
    Array.prototype.forEach.call(root.querySelectorAll("button[data-jump]"), function (b) {
      b.addEventListener("click", function () { show(+b.getAttribute("data-jump")); slider.focus(); });
    });
    show(+root.getAttribute("data-selected"));
  });
"""


# ------------------------------------------------------------------------------------------------ checks
def _vector(value, name: str, n: int | None = None, kind: str = "float") -> np.ndarray:
    try:
        arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
    except Exception:  # noqa: BLE001 - anything that is not array-like
        raise TypeError(f"{name} must be a 1-D array or tensor, got {type(value).__name__}") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per point), got shape {arr.shape}")
    if n is not None and len(arr) != n:
        raise ValueError(f"{name} must hold one value per score: {len(arr)} values for {n} scores")
    if kind == "float":
        try:
            arr = arr.astype(float)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must hold numbers, got dtype {arr.dtype}") from None
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or inf); a threshold cannot order them")
    elif kind == "bool":
        if arr.dtype != bool:
            if not np.isin(arr, (0, 1)).all():
                raise ValueError(f"{name} must be booleans (True = should be flagged) or 0/1")
            arr = arr.astype(bool)
    elif kind == "int":
        if not np.issubdtype(arr.dtype, np.integer):
            if arr.dtype.kind == "f" and np.all(arr == np.round(arr)):
                arr = arr.astype(int)
            else:
                raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr


def threshold_grid(scores: np.ndarray, marks: Sequence[float] = (), n: int = 200) -> np.ndarray:
    """The sorted thresholds a slider can take: ``n`` quantiles of ``scores`` (so each slider step flags about the
    same number of extra points, however long the tail of the scores), one threshold above the largest score (flags
    everything) and the ``marks`` exactly."""
    scores = np.asarray(scores, float)
    q = np.quantile(scores, np.linspace(0.0, 1.0, n))
    top = np.nextafter(scores.max(), np.inf)
    return np.unique(np.concatenate([q, [top], np.asarray(list(marks), float)]))


def first_flagged(scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """For every score the index of the first grid threshold that flags it (``score < t``): the point is flagged at
    grid position ``j`` exactly when ``j >= first_flagged``."""
    return np.searchsorted(grid, np.asarray(scores, float), side="right")


def _marks(marks) -> dict[str, float]:
    if marks is None:
        return {}
    if not isinstance(marks, Mapping):
        raise TypeError("marks must be a dict {name: threshold}, e.g. {'1st percentile of training scores': -12.3}")
    if len(marks) > MAX_MARKS:
        raise ValueError(f"at most {MAX_MARKS} marked thresholds, got {len(marks)}")
    out = {}
    for name, value in marks.items():
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"marks[{name!r}] must be a number, got {value!r}") from None
        if not np.isfinite(v):
            raise ValueError(f"marks[{name!r}] must be finite, got {value!r}")
        out[str(name)] = v
    return out


def _pick_days(day: np.ndarray, anomalous: np.ndarray, labels: np.ndarray | None, n_days: int) -> list:
    """Up to ``n_days`` days, alternating days of normal and of anomalous points, one class per day where possible
    (the day with most points of that class)."""
    groups: dict[bool, list] = {False: [], True: []}
    keys = labels if labels is not None else anomalous.astype(int)
    for c in np.unique(keys):
        sel = keys == c
        days, counts = np.unique(day[sel], return_counts=True)
        best = days[np.argmax(counts)]
        groups[bool(anomalous[sel].mean() > 0.5)].append(best)
    picked, order = [], [groups[False], groups[True]]
    while len(picked) < n_days and (order[0] or order[1]):
        for g in order:
            if g and len(picked) < n_days:
                d = g.pop(0)
                if d not in picked:
                    picked.append(d)
    return picked


# ------------------------------------------------------------------------------------------- the picture
def symlog_ticks(lo: float, hi: float, linthresh: float) -> list[float]:
    """Ticks for a symmetric-log axis over ``[lo, hi]``: 0 and ``±m * linthresh * 10**k`` with ``m`` in (1,), else
    (1, 3), else (1, 2, 5), whichever first gives at least three ticks in the range; evenly spaced ticks for a range
    too narrow for that."""
    for mults in ((1,), (1, 3), (1, 2, 5)):
        ticks = {0.0} if lo <= 0 <= hi else set()
        for sign in (-1, 1):
            k = 0
            while linthresh * 10 ** k <= max(abs(lo), abs(hi)):
                ticks.update(sign * m * linthresh * 10 ** k for m in mults
                             if lo <= sign * m * linthresh * 10 ** k <= hi)
                k += 1
        if len(ticks) >= 3:
            return sorted(ticks)
    from matplotlib.ticker import MaxNLocator  # a narrow range: ordinary evenly spaced ticks

    return [float(t) for t in MaxNLocator(5).tick_values(lo, hi) if lo <= t <= hi]


def tick_label(t: float) -> str:
    """A plain tick label (unicode minus; powers of ten beyond 10^5)."""
    if t == 0:
        return "0"
    sign = "\u2212" if t < 0 else ""
    a = abs(t)
    return f"{sign}{a:,.0f}" if a < 1e5 else f"{sign}10$^{{{int(round(np.log10(a)))}}}$"


def _day_panels(scores, anomalous, labels, colors, class_names, hours, day, days, grid, marks, *, linthresh,
                panel_px, cols, unit, anomalous_name, normal_name):
    """The day panels as a PNG (matplotlib, symlog score axis) and, in the picture's pixel coordinates, the points
    drawn (x, y, index) and each panel's threshold line: ``x`` extent and ``y`` per grid threshold (clipped)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    rows = -(-len(days) // cols)
    dpi = 100
    w_px, h_px = panel_px
    fig = Figure(figsize=(cols * w_px / dpi, rows * h_px / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    drawn = [np.flatnonzero(day == d) for d in days]
    shown = np.concatenate(drawn)
    lo = min(scores[shown].min(), *(marks.values() or [np.inf]))
    hi = max(scores[shown].max(), *(marks.values() or [-np.inf]))
    pad = 0.05 * (hi - lo) + 1.0
    ylim = (lo - pad, hi + pad)
    axes = fig.subplots(rows, cols, squeeze=False)
    ticks = symlog_ticks(*ylim, linthresh)
    for ax in axes.flat[len(days):]:
        ax.set_axis_off()
    for ax, d, idx in zip(axes.flat, days, drawn):
        idx = idx[np.argsort(hours[idx])]
        ax.set_yscale("symlog", linthresh=linthresh)
        ax.set_ylim(*ylim)
        ax.set_yticks(ticks, [tick_label(t) for t in ticks])
        ax.yaxis.set_minor_locator(NullLocator())
        ax.plot(hours[idx], scores[idx], color="0.75", lw=0.6, zorder=1)
        c = [colors[labels[i]] for i in idx] if labels is not None else \
            [FLAG if anomalous[i] else "#1f77b4" for i in idx]
        ax.scatter(hours[idx], scores[idx], s=9, c=c, linewidths=0, zorder=2)
        for k, (name, v) in enumerate(marks.items()):
            ax.axhline(v, color="0.35", lw=0.8, ls=(0, (1, 2)), zorder=0)
        if labels is not None:
            names = sorted({class_names[labels[i]] for i in idx})
            what = anomalous_name if anomalous[idx].mean() > 0.5 else normal_name
            ax.set_title(f"day {d}: {', '.join(names)} ({what})", fontsize=9)
        else:
            ax.set_title(f"day {d}", fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.25, lw=0.5)
    for ax in axes[:, 0]:
        ax.set_ylabel(unit, fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("time of day (h)", fontsize=8)
    fig.tight_layout(pad=0.6, h_pad=0.8, w_pad=0.6)
    canvas.draw()
    width, height = (int(round(v)) for v in fig.bbox.size)
    rgba = np.asarray(canvas.buffer_rgba())[:height, :width, :3].copy()
    points, lines = [], []
    for ax, idx in zip(axes.flat, drawn):
        xy = ax.transData.transform(np.column_stack([hours[idx], scores[idx]]))
        points += [(float(x), float(height - y), int(i)) for (x, y), i in zip(xy, idx)]
        box = ax.get_window_extent()
        clipped = np.clip(grid, *ylim)
        ys = ax.transData.transform(np.column_stack([np.zeros_like(clipped), clipped]))[:, 1]
        lines.append({"x1": float(box.x0), "x2": float(box.x1),
                      "y": [round(float(height - y), 1) for y in ys]})
    return rgba, (width, height), points, lines


def _roc_svg(grid_counts, size: int = 150) -> tuple[str, dict]:
    """A small ROC (hit rate against false-alarm rate at the grid thresholds) with a dot the script moves."""
    m = 26
    x0, y0, w, h = m, 6, size - m - 6, size - m - 6
    pts = " ".join(f"{x0 + w * r['false_alarm_rate']:.1f},{y0 + h * r['miss_rate']:.1f}" for r in grid_counts)
    svg = (f'<svg class="dgmx-roc" width="{size}" height="{size}" viewBox="0 0 {size} {size}" role="img" '
           f'aria-label="ROC curve">'
           f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}"/>'
           f'<line x1="{x0}" y1="{y0 + h}" x2="{x0 + w}" y2="{y0}" stroke-dasharray="3 3"/>'
           f'<polyline points="{pts}"/><circle r="4" cx="{x0}" cy="{y0 + h}"/>'
           f'<text x="{x0 + w / 2}" y="{size - 4}" text-anchor="middle">false-alarm rate</text>'
           f'<text x="9" y="{y0 + h / 2}" text-anchor="middle" transform="rotate(-90 9 {y0 + h / 2})">hit rate'
           f'</text><text x="{x0 - 3}" y="{y0 + 8}" text-anchor="end">1</text>'
           f'<text x="{x0 - 3}" y="{y0 + h}" text-anchor="end">0</text>'
           f'<text x="{x0 + w}" y="{y0 + h + 10}" text-anchor="end">1</text></svg>')
    return svg, {"x0": x0, "y0": y0, "w": w, "h": h}


# ---------------------------------------------------------------------------------------------- the API
class ThresholdData:
    """The checked inputs and everything both views share: the grid, each point's first flagging index, the
    per-class counts and (with ``day``/``hours``) the day panels."""

    def __init__(self, scores, anomalous, *, labels=None, class_names=None, colors=None, hours=None, day=None,
                 days=None, n_days: int = 6, marks=None, initial=None, grid: int = 200, linthresh: float | None = None,
                 unit: str = "nats", what: str = "points", normal_name: str = "normal",
                 anomalous_name: str = "anomalous", panel_px=(300, 185), cols: int = 3):
        self.scores = _vector(scores, "scores")
        n = len(self.scores)
        if n < 2:
            raise ValueError(f"scores must hold at least two points, got {n}")
        self.anomalous = _vector(anomalous, "anomalous", n, "bool")
        if self.anomalous.all() or not self.anomalous.any():
            raise ValueError("anomalous must mark some points True (should be flagged) and some False (normal); "
                             f"got {int(self.anomalous.sum())} of {n} True")
        self.labels = None if labels is None else _vector(labels, "labels", n, "int")
        if self.labels is not None:
            if self.labels.min() < 0:
                raise ValueError("labels must be class indices >= 0")
            k = int(self.labels.max()) + 1
            class_names = [str(c) for c in range(k)] if class_names is None else [str(c) for c in class_names]
            if len(class_names) < k:
                raise ValueError(f"class_names must name every class: labels go up to {k - 1}, "
                                 f"{len(class_names)} names given")
        elif class_names is not None:
            raise ValueError("class_names were given without labels; pass labels=... (one class index per point)")
        self.class_names = list(class_names) if class_names is not None else []
        if not isinstance(grid, (int, np.integer)) or isinstance(grid, bool) or not 10 <= grid <= 2000:
            raise ValueError(f"grid must be an integer between 10 and 2000 (slider positions), got {grid!r}")
        self.marks = _marks(marks)
        self.grid = threshold_grid(self.scores, self.marks.values(), int(grid))
        self.k = first_flagged(self.scores, self.grid)
        self.unit, self.what = str(unit), str(what)
        self.normal_name, self.anomalous_name = str(normal_name), str(anomalous_name)
        self.mark_index = {name: int(np.searchsorted(self.grid, v)) for name, v in self.marks.items()}
        if initial is None:
            self.initial = next(iter(self.mark_index.values()), len(self.grid) // 2)
        elif isinstance(initial, str):
            if initial not in self.mark_index:
                raise ValueError(f"initial={initial!r} is not one of the marks {sorted(self.mark_index)}")
            self.initial = self.mark_index[initial]
        else:
            try:
                t = float(initial)
            except (TypeError, ValueError):
                raise TypeError(f"initial must be a mark's name or a threshold, got {initial!r}") from None
            self.initial = int(np.clip(np.searchsorted(self.grid, t), 0, len(self.grid) - 1))
        self.colors = _label_colors(len(self.class_names)) if self.class_names else []
        if colors is not None:
            if not self.class_names:
                raise ValueError("colors were given without labels; pass labels=... (one class index per point)")
            import matplotlib.colors as mcolors

            try:
                self.colors = [mcolors.to_hex(c) for c in colors]
            except (TypeError, ValueError) as err:
                raise ValueError(f"colors must be matplotlib colours, one per class: {err}") from None
            if len(self.colors) < len(self.class_names):
                raise ValueError(f"colors must hold one colour per class ({len(self.class_names)}), "
                                 f"got {len(self.colors)}")
        self.class_n = [int((self.labels == c).sum()) for c in range(len(self.class_names))] if self.class_names \
            else []
        self.class_anomalous = [float(self.anomalous[self.labels == c].mean()) if self.class_n[c] else 0.0
                                for c in range(len(self.class_names))]

        if (hours is None) != (day is None):
            raise ValueError("hours and day go together: pass both (to draw days of points) or neither")
        self.picture = None
        if day is not None:
            hours = _vector(hours, "hours", n)
            day = _vector(day, "day", n, "int")
            if days is None:
                if not isinstance(n_days, (int, np.integer)) or not 1 <= n_days <= MAX_DAYS:
                    raise ValueError(f"n_days must be an integer between 1 and {MAX_DAYS}, got {n_days!r}")
                days = _pick_days(day, self.anomalous, self.labels, int(n_days))
            else:
                days = [int(d) for d in days]
                missing = sorted(set(days) - set(day.tolist()))
                if missing:
                    raise ValueError(f"days {missing} hold no points; days present: {sorted(set(day.tolist()))[:20]}")
                if not 1 <= len(days) <= MAX_DAYS:
                    raise ValueError(f"pass between 1 and {MAX_DAYS} days, got {len(days)}")
            self.days = days
            if linthresh is None:  # a power of ten that keeps most normal scores on the linear part of the axis
                normal = np.abs(self.scores[~self.anomalous])
                linthresh = 10.0 ** np.ceil(np.log10(max(1.0, float(np.percentile(normal, 90)))))
            elif not (isinstance(linthresh, (int, float, np.number)) and np.isfinite(linthresh) and linthresh > 0):
                raise ValueError(f"linthresh must be a positive number, got {linthresh!r}")
            cols = max(1, min(int(cols), len(days)))
            self.picture = _day_panels(self.scores, self.anomalous, self.labels, self.colors, self.class_names,
                                       hours, day, days, self.grid, self.marks, linthresh=float(linthresh),
                                       panel_px=panel_px, cols=cols, unit=f"score ({self.unit})",
                                       anomalous_name=self.anomalous_name, normal_name=self.normal_name)
        else:
            if days is not None:
                raise ValueError("days were given without day and hours; pass day=... and hours=... too")
            self.days = []

    def rates(self, j: int) -> dict:
        """:func:`dgmlab.monitoring.threshold_rates` at grid threshold ``j``, plus per-class flagged counts."""
        from dgmlab.monitoring import threshold_rates

        t = float(self.grid[j])
        r = threshold_rates(self.scores[~self.anomalous], self.scores[self.anomalous], t)
        flagged = self.scores < t
        r["per_class"] = [int((flagged & (self.labels == c)).sum()) for c in range(len(self.class_names))]
        return r

    def page_data(self) -> dict:
        """What the static view's script reads (JSON)."""
        d = {"t": [float(v) for v in self.grid], "k": self.k.tolist(), "a": self.anomalous.astype(int).tolist(),
             "c": (self.labels.tolist() if self.labels is not None else [-1] * len(self.scores)),
             "classes": self.class_names, "class_n": self.class_n, "unit": self.unit, "what": self.what}
        d["line_y"] = [ln["y"] for ln in self.picture[3]] if self.picture else []
        return d


def _tables(td: ThresholdData) -> str:
    summary = (f'<table class="dgmx-big"><tr><th></th><th>flagged</th></tr>'
               f'<tr><td>false alarms ({html.escape(td.normal_name)} {html.escape(td.what)} flagged)</td>'
               f'<td class="dgmx-fa"></td></tr>'
               f'<tr><td>hits ({html.escape(td.anomalous_name)} {html.escape(td.what)} flagged)</td>'
               f'<td class="dgmx-hit"></td></tr>'
               f'<tr><td>misses ({html.escape(td.anomalous_name)} {html.escape(td.what)} not flagged)</td>'
               f'<td class="dgmx-miss"></td></tr></table>')
    if not td.class_names:
        return summary
    rows = []
    for c, name in enumerate(td.class_names):
        if not td.class_n[c]:
            continue
        share = td.class_anomalous[c]
        kind = td.anomalous_name if share == 1 else td.normal_name if share == 0 else "mixed"
        rows.append(f'<tr><td><span class="dgmx-sw" style="background:{td.colors[c]}"></span>{html.escape(name)}'
                    f'</td><td>{html.escape(kind)}</td><td>{td.class_n[c]}</td><td class="dgmx-pc{c}"></td></tr>')
    return (summary + '<table><tr><th>class</th><th></th><th>' + html.escape(td.what) +
            '</th><th>flagged</th></tr>' + "".join(rows) + "</table>")


def threshold_view_html(td: ThresholdData, title: str, note: str = "") -> StaticView:
    """The kernel-free view of :func:`threshold_explorer` (see the module docstring)."""
    uid = new_id()
    data = json.dumps(td.page_data(), separators=(",", ":")).replace("</", "<\\/")
    from dgmlab.monitoring import threshold_rates

    grid_counts = [threshold_rates(td.scores[~td.anomalous], td.scores[td.anomalous], t) for t in td.grid]
    roc, box = _roc_svg(grid_counts)
    data = data[:-1] + f',"roc":{json.dumps(box)}}}'
    buttons = "".join(f'<button type="button" data-jump="{j}">{html.escape(name)} ({td.marks[name]:.4g} '
                      f'{html.escape(td.unit)})</button>' for name, j in td.mark_index.items())
    days, n_images = "", 0
    if td.picture is not None:
        rgba, (w, h), points, lines = td.picture
        n_images = 1
        rings = "".join(f'<circle class="dgmx-m" cx="{x:.1f}" cy="{y:.1f}" r="5" data-k="{td.k[i]}"/>'
                        for x, y, i in points)
        tl = "".join(f'<line class="dgmx-tl" x1="{ln["x1"]:.1f}" x2="{ln["x2"]:.1f}" y1="{ln["y"][td.initial]}" '
                     f'y2="{ln["y"][td.initial]}"/>' for ln in lines)
        days = (f'<div class="dgmx-days" style="flex:0 1 {w}px;min-width:0">'
                f'<img src="{data_uri(png_bytes(rgba, colors=128))}" width="{w}" height="{h}" '
                f'alt="scores of the chosen days against the time of day">'
                f'<svg viewBox="0 0 {w} {h}" preserveAspectRatio="none">{tl}{rings}</svg></div>')
    one = td.what[:-1] if td.what.endswith("s") else td.what
    help_text = (f"Drag the slider (or use the arrow keys on it) to move the threshold: a {html.escape(one)} "
                 f"is flagged when its score is below it (ringed; the dashed line is the threshold). The slider "
                 f"steps through {len(td.grid)} thresholds spaced by quantiles of the scores. Precomputed: works "
                 f"without a running kernel.")
    markup = f"""<div class="dgmx dgmx-t" id="{uid}" tabindex="-1" data-selected="{td.initial}" \
data-n="{len(td.grid)}" data-days="{html.escape(json.dumps([int(d) for d in td.days]), quote=True)}">
<style>{_CSS}{_CSS_T}</style>
<div class="dgmx-title">{html.escape(title)}</div>
<div class="dgmx-tctl"><input class="dgmx-slider" type="range" min="0" max="{len(td.grid) - 1}" step="1" \
value="{td.initial}" aria-label="threshold"><span class="dgmx-readout"></span></div>
<div class="dgmx-buttons">{buttons}</div>
<div class="dgmx-body">
{days}
<div class="dgmx-side">{_tables(td)}{roc}
<div class="dgmx-help">{help_text}{(' ' + html.escape(note)) if note else ''}</div>
</div>
</div>
<script type="application/json" class="dgmx-data">{data}</script>
{_script(uid, _JS_COUNTS + _JS_VIEW)}
</div>"""
    return StaticView(markup, uid, n_images=n_images, kind="threshold")


def threshold_explorer(scores, anomalous, *, labels=None, class_names: Sequence[str] | None = None,
                       colors: Sequence[str] | None = None, hours=None, day=None,
                       days: Sequence[int] | None = None, n_days: int = 6,
                       marks: Mapping[str, float] | None = None, initial=None, grid: int = 200,
                       mode: str = "auto", title: str = "Anomaly threshold explorer", unit: str = "nats",
                       what: str = "points", normal_name: str = "normal", anomalous_name: str = "anomalous",
                       linthresh: float | None = None, cols: int = 3):
    """Move an anomaly threshold over precomputed scores; see false alarms, misses and which points are flagged.

    Args:
        scores: ``(N,)`` one score per point, e.g. the SDGM's unlabelled bound ``U(x)`` of every test minute
            (:func:`dgmlab.monitoring.elbo_scores`). A point is flagged when its score is below the threshold.
        anomalous: ``(N,)`` booleans: ``True`` for points that should be flagged (classes the model has not seen),
            ``False`` for normal ones. Both kinds must occur.
        labels, class_names: optional class index per point and the class names: colours the points and adds a
            per-class table of flagged points; ``colors`` (one matplotlib colour per class) replaces the default
            palette.
        hours, day: optional time of day (hours) and day id per point; with them the view draws the scores of
            ``days`` (default: up to ``n_days`` chosen automatically, alternating normal and anomalous days)
            against the time of day, with flagged points ringed and the threshold drawn in every panel.
        marks: ``{name: threshold}`` thresholds the slider can jump to (e.g. a data-driven and a fixed one);
            ``initial`` is a mark's name or a threshold to start from (default: the first mark, else the median).
        grid: number of quantile thresholds of the slider (marks are added exactly).
        mode: ``"static"`` (kernel-free HTML), ``"live"`` (ipywidgets) or ``"auto"`` (both; see
            :mod:`dgmlab.widgets.explorer`).
        unit, what, normal_name, anomalous_name: words used by the read-outs ("nats", "test minutes", "seen
            class", "unseen class").
        linthresh: the linear range of the symmetric-log score axis of the day panels (default: the 90th
            percentile of the normal points' absolute scores).

    Returns:
        a :class:`~dgmlab.widgets.static.StaticView` (``kind == "threshold"``), a :class:`LiveThresholdExplorer`
        or an :class:`~dgmlab.widgets.explorer.ExplorerView` holding both.
    """
    mode = resolve_mode(mode)
    td = ThresholdData(scores, anomalous, labels=labels, class_names=class_names, colors=colors, hours=hours,
                       day=day, days=days, n_days=n_days, marks=marks, initial=initial, grid=grid,
                       linthresh=linthresh, unit=unit, what=what, normal_name=normal_name,
                       anomalous_name=anomalous_name, cols=cols)
    static = live = None
    if mode in ("static", "auto"):
        static = threshold_view_html(td, title)
    if mode in ("live", "auto"):
        note = ("Live: recomputes the counts in the Python kernel on every move (on the static book page use the "
                "precomputed view above)." if mode == "auto" else "")
        live = LiveThresholdExplorer(td, title=f"{title} (live)", note=note)
    if mode == "static":
        return static
    if mode == "live":
        return live
    return ExplorerView(static, live)


class LiveThresholdExplorer:
    """The live half: a slider over the same threshold grid, a drop-down of the marked thresholds, the day panels
    with the flagged points ringed and the counts of :func:`~dgmlab.monitoring.threshold_rates` recomputed in the
    kernel on every change. ``widget`` is the ipywidgets layout (displaying the object displays it); ``update`` is
    a plain method, so tests can drive it without a browser. (A wrapper rather than a subclass, so that importing
    :mod:`dgmlab.widgets` does not import ipywidgets.)"""

    def __init__(self, td: ThresholdData, *, title: str, note: str = ""):
        import ipywidgets as widgets

        self.td = td
        self.n_updates = 0
        self.slider = widgets.IntSlider(value=td.initial, min=0, max=len(td.grid) - 1, step=1,
                                        description="threshold", readout=False, continuous_update=True,
                                        layout=widgets.Layout(width="520px"))
        options = [("(slider)", -1)] + [(f"{name} ({td.marks[name]:.4g} {td.unit})", j)
                                         for name, j in td.mark_index.items()]
        self.jump = widgets.Dropdown(options=options, value=-1, description="jump to")
        self.readout = widgets.HTML()
        self.table = widgets.HTML()
        self.overlay = widgets.HTML()
        children = [widgets.HTML(f"<b>{html.escape(title)}</b>")]
        if note:
            children.append(widgets.HTML(f'<span style="font-size:12px;opacity:.8">{html.escape(note)}</span>'))
        children += [widgets.HBox([self.slider, self.readout]), self.jump]
        body = [self.table]
        if td.picture is not None:
            rgba, (w, h), _, _ = td.picture
            self.picture = widgets.Image(value=png_bytes(rgba, colors=128), format="png", width=w, height=h,
                                         layout=widgets.Layout(grid_area="pic", margin="0"))
            self.overlay.layout = widgets.Layout(grid_area="pic", margin="0", width=f"{w}px", height=f"{h}px")
            body.insert(0, widgets.GridBox([self.picture, self.overlay], layout=widgets.Layout(
                grid_template_areas='"pic"', grid_template_columns=f"{w}px", grid_template_rows=f"{h}px")))
        children.append(widgets.HBox(body, layout=widgets.Layout(flex_flow="row wrap")))
        self.widget = widgets.VBox(children=children)
        self.slider.observe(lambda change: self.update(), names="value")
        self.jump.observe(self._on_jump, names="value")
        self.update()

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def _on_jump(self, change) -> None:
        if change["new"] is not None and change["new"] >= 0:
            self.slider.value = change["new"]  # triggers update

    @property
    def threshold(self) -> float:
        return float(self.td.grid[self.slider.value])

    def update(self) -> None:
        """Recompute the counts at the slider's threshold and redraw the read-out, the tables and the rings."""
        td, j = self.td, self.slider.value
        if self.jump.value not in (-1, j):  # the slider moved away from the mark picked in the drop-down
            self.jump.value = -1
        r = td.rates(j)
        self.rates = r
        self.n_updates += 1
        n_n, n_a = int((~td.anomalous).sum()), int(td.anomalous.sum())
        self.readout.value = (f"threshold {r['threshold']:.4g} {html.escape(td.unit)}: "
                              f"{r['false_alarms'] + n_a - r['misses']} of {len(td.scores)} {html.escape(td.what)} "
                              f"flagged")
        rows = [("false alarms", f"{r['false_alarms']} of {n_n} ({100 * r['false_alarm_rate']:.1f} %)"),
                ("misses", f"{r['misses']} of {n_a} ({100 * r['miss_rate']:.1f} %)")]
        for c, name in enumerate(td.class_names):
            if td.class_n[c]:
                rows.append((html.escape(name), f"{r['per_class'][c]} of {td.class_n[c]} "
                                                f"({100 * r['per_class'][c] / td.class_n[c]:.1f} %)"))
        self.table.value = ('<table style="font-size:12px">' + "".join(
            f'<tr><td style="padding-right:8px">{a}</td><td style="text-align:right">{b}</td></tr>'
            for a, b in rows) + "</table>")
        if td.picture is not None:
            _, (w, h), points, lines = td.picture
            rings = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="none" stroke="{FLAG}" '
                            f'stroke-width="1.6"/>' for x, y, i in points if td.k[i] <= j)
            tl = "".join(f'<line x1="{ln["x1"]:.1f}" x2="{ln["x2"]:.1f}" y1="{ln["y"][j]}" y2="{ln["y"][j]}" '
                         f'stroke="{FLAG}" stroke-width="1.5" stroke-dasharray="5 3"/>' for ln in lines)
            self.overlay.value = (f'<svg width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
                                  f'style="display:block;pointer-events:none">{tl}{rings}</svg>')
