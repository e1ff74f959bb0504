"""The anomaly-threshold explorer (dgmlab.widgets.threshold): self-contained HTML, unique ids, input errors, and
counts that agree with dgmlab.monitoring.threshold_rates on the page (its script, run in node), in Python and live."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from dgmlab.monitoring import threshold_rates
from dgmlab.widgets import ExplorerView, StaticView, save_page, threshold_explorer
from dgmlab.widgets.threshold import LiveThresholdExplorer, first_flagged, threshold_grid

NODE = shutil.which("node")


def toy(n: int = 400, seed: int = 0) -> dict:
    """Five classes on their own days; classes 3 and 4 are 'unseen' and score much lower (with ties and overlap)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 5, n)
    anomalous = labels >= 3
    scores = np.where(anomalous, -8 - rng.exponential(300, n), rng.normal(-5, 3, n)).round(1)  # rounding: ties
    day = labels * 3 + rng.integers(0, 3, n)
    hours = 8 + 8 * rng.random(n)
    return {"scores": scores, "anomalous": anomalous, "labels": labels, "class_names": list("ABCDE"),
            "hours": hours, "day": day}


def page_data(markup: str) -> dict:
    blocks = re.findall(r'<script type="application/json" class="dgmx-data">(.*?)</script>', markup, re.S)
    assert len(blocks) == 1
    return json.loads(blocks[0])


def counts_js(markup: str) -> str:
    """The counting function exactly as the page carries it."""
    m = re.search(r"/\*counts>\*/(.*?)/\*<counts\*/", markup, re.S)
    assert m, "the page's script must carry the counting function between its markers"
    return m.group(1)


# --------------------------------------------------------------------------------------------- static view
def test_static_view_is_self_contained_with_one_script_and_a_picture():
    d = toy()
    view = threshold_explorer(**d, marks={"p1": -12.0, "fixed": -60.0}, mode="static")
    assert isinstance(view, StaticView) and view.kind == "threshold" and view.n_images == 1
    markup = view.data
    assert markup.count(f'id="{view.element_id}"') == 1
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", markup), "no resource may come from the network"
    assert "http://" not in markup and "https://" not in markup and "require(" not in markup
    assert len(re.findall(r"<script>", markup)) == 1 and "data:image/png;base64," in markup
    data = page_data(markup)
    assert len(data["k"]) == len(data["a"]) == len(data["c"]) == len(d["scores"])
    drawn = sum(np.isin(d["day"], view_days(markup)).tolist())
    assert len(re.findall(r'<circle class="dgmx-m"', markup)) == drawn
    assert len(data["line_y"]) == len(view_days(markup)) and all(len(y) == len(data["t"]) for y in data["line_y"])


def view_days(markup: str) -> list[int]:
    return json.loads(html.unescape(re.search(r'data-days="([^"]*)"', markup).group(1)))


def test_every_view_gets_its_own_id_and_a_page_holds_several(tmp_path):
    d = toy()
    views = [threshold_explorer(**d, mode="static") for _ in range(3)]
    ids = [v.element_id for v in views]
    assert len(set(ids)) == 3
    page = (tmp_path / "page.html")
    save_page(views, page)
    text = page.read_text()
    assert all(text.count(f'id="{i}"') == 1 for i in ids)
    # every element id on the page is unique
    all_ids = re.findall(r'\sid="([^"]+)"', text)
    assert len(all_ids) == len(set(all_ids))


def test_grid_holds_the_marks_exactly_and_spans_all_scores():
    d = toy()
    marks = {"data-driven": -12.345678, "fixed": -60.0}
    view = threshold_explorer(**d, marks=marks, mode="static", initial="fixed")
    data = page_data(view.data)
    t = np.array(data["t"])
    assert np.all(np.diff(t) > 0)
    for v in marks.values():
        assert v in data["t"]
    assert t[0] <= d["scores"].min() and t[-1] > d["scores"].max()  # nothing flagged at the bottom, all at the top
    j = int(re.search(r'data-selected="(\d+)"', view.data).group(1))
    assert t[j] == -60.0
    jumps = [int(x) for x in re.findall(r'data-jump="(\d+)"', view.data)]
    assert [t[x] for x in jumps] == list(marks.values())


def test_first_flagged_index_reproduces_the_rule_score_below_threshold():
    scores = np.array([-3.0, -2.0, -2.0, 0.0, 5.0])
    grid = threshold_grid(scores, marks=[-2.0], n=10)
    k = first_flagged(scores, grid)
    for j, t in enumerate(grid):
        assert np.array_equal(k <= j, scores < t), f"at threshold {t}"


def test_python_side_counts_from_the_page_data_agree_with_threshold_rates():
    d = toy()
    data = page_data(threshold_explorer(**d, marks={"p1": -12.0}, mode="static").data)
    k, a, c = (np.array(data[key]) for key in ("k", "a", "c"))
    normal, anomalous = d["scores"][~d["anomalous"]], d["scores"][d["anomalous"]]
    for j, t in enumerate(data["t"]):
        ref = threshold_rates(normal, anomalous, t)
        on = k <= j
        assert int((on & (a == 0)).sum()) == ref["false_alarms"]
        assert int((~on & (a == 1)).sum()) == ref["misses"]


@pytest.mark.skipif(NODE is None, reason="node not installed")
def test_the_pages_own_counting_function_agrees_with_threshold_rates(tmp_path):
    d = toy(seed=3)
    markup = threshold_explorer(**d, marks={"p1": -12.0, "fixed": -60.0}, mode="static").data
    data = page_data(markup)
    script = (counts_js(markup) + "\nvar D = " + json.dumps(data) + ";\nvar out = [];\n"
              "for (var j = 0; j < D.t.length; j++) out.push(dgmxCounts(D, j));\n"
              "console.log(JSON.stringify(out));\n")
    path = tmp_path / "counts.js"
    path.write_text(script)
    res = subprocess.run([NODE, str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    js = json.loads(res.stdout)
    normal, anomalous = d["scores"][~d["anomalous"]], d["scores"][d["anomalous"]]
    assert len(js) == len(data["t"])
    for j, r in enumerate(js):
        ref = threshold_rates(normal, anomalous, data["t"][j])
        assert (r["false_alarms"], r["misses"]) == (ref["false_alarms"], ref["misses"]), f"grid position {j}"
        assert r["false_alarm_rate"] == pytest.approx(ref["false_alarm_rate"])
        assert r["miss_rate"] == pytest.approx(ref["miss_rate"])
        flagged = d["scores"] < data["t"][j]
        assert r["per_class"] == [int((flagged & (d["labels"] == c)).sum()) for c in range(5)]


FAKE_DOM = r"""
function El(cls, attrs) { this.cls = cls || ""; this.attrs = attrs || {}; this.textContent = ""; this.listeners = {};
  var self = this;
  this.classList = {add: function (c) { self.on = true; }, remove: function (c) { self.on = false; }}; }
El.prototype.getAttribute = function (k) { return k in this.attrs ? String(this.attrs[k]) : null; };
El.prototype.setAttribute = function (k, v) { this.attrs[k] = v; };
El.prototype.addEventListener = function (ev, f) { this.listeners[ev] = f; };
El.prototype.focus = function () {};
var nodes = {};
function all(sel) { return nodes[sel] || []; }
var root = new El("dgmx", {"data-selected": SELECTED});
root.id = ID0;
root.querySelector = function (sel) {
  if (sel === "script.dgmx-data") return {textContent: DATA};
  if (!nodes[sel]) nodes[sel] = [new El(sel)];
  return nodes[sel][0];
};
root.querySelectorAll = function (sel) { return all(sel); };
nodes["input.dgmx-slider"] = [new El("slider", {})];
nodes[".dgmx-m"] = RINGS.map(function (k) { return new El("ring", {"data-k": k}); });
nodes[".dgmx-tl"] = LINES.map(function () { return new El("line", {}); });
nodes["button[data-jump]"] = JUMPS.map(function (j) { return new El("button", {"data-jump": j}); });
var document = {currentScript: null, getElementById: function (id) { return id === ID0 ? root : null; }};
function setTimeout(f) { f(); }
"""


@pytest.mark.skipif(NODE is None, reason="node not installed")
def test_the_pages_script_runs_and_updates_counts_rings_and_lines(tmp_path):
    """Runs the view's whole script against a minimal stand-in for the DOM: the initial state, a slider move and a
    button jump must show the counts of threshold_rates and ring exactly the flagged drawn points."""
    d = toy(seed=1)
    view = threshold_explorer(**d, marks={"p1": -12.0, "fixed": -60.0}, mode="static")
    markup = view.data
    data = page_data(markup)
    script = re.search(r"<script>(.*?)</script>", markup, re.S).group(1)
    rings = [int(x) for x in re.findall(r'<circle class="dgmx-m"[^>]*data-k="(\d+)"', markup)]
    jumps = [int(x) for x in re.findall(r'data-jump="(\d+)"', markup)]
    selected = int(re.search(r'data-selected="(\d+)"', markup).group(1))
    target = len(data["t"]) // 3
    dom = (FAKE_DOM.replace("SELECTED", str(selected)).replace("ID0", json.dumps(view.element_id))
           .replace("DATA", json.dumps(json.dumps(data))).replace("RINGS", json.dumps(rings))
           .replace("LINES", json.dumps(data["line_y"])).replace("JUMPS", json.dumps(jumps)))
    driver = f"""
var states = [];
function state() {{ return {{sel: +root.getAttribute("data-selected"),
  counts: JSON.parse(root.getAttribute("data-counts")),
  on: nodes[".dgmx-m"].filter(function (r) {{ return r.on; }}).length,
  y: nodes[".dgmx-tl"].map(function (l) {{ return +l.getAttribute("y1"); }}),
  readout: root.querySelector(".dgmx-readout").textContent, fa: root.querySelector(".dgmx-fa").textContent}}; }}
states.push(state());
var slider = nodes["input.dgmx-slider"][0];
slider.value = "{target}"; slider.listeners["input"]();
states.push(state());
nodes["button[data-jump]"][1].listeners["click"]();
states.push(state());
console.log(JSON.stringify(states));
"""
    path = tmp_path / "view.js"
    path.write_text(dom + script + driver)
    res = subprocess.run([NODE, str(path)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    states = json.loads(res.stdout)
    normal, anomalous = d["scores"][~d["anomalous"]], d["scores"][d["anomalous"]]
    for st, j in zip(states, (selected, target, jumps[1])):
        ref = threshold_rates(normal, anomalous, data["t"][j])
        assert st["sel"] == j
        assert st["counts"] == [ref["false_alarms"], ref["misses"]]
        assert st["on"] == sum(k <= j for k in rings)
        assert st["y"] == [ys[j] for ys in data["line_y"]]
        assert st["fa"].startswith(f"{ref['false_alarms']} of {len(normal)}")
        assert "threshold" in st["readout"] and "flagged" in st["readout"]
    assert data["t"][jumps[1]] == -60.0


@pytest.mark.skipif(NODE is None, reason="node not installed")
def test_inline_javascript_parses(tmp_path):
    markup = threshold_explorer(**toy(), mode="static").data
    path = tmp_path / "view.js"
    path.write_text(re.search(r"<script>(.*?)</script>", markup, re.S).group(1))
    res = subprocess.run([NODE, "--check", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_without_days_the_view_has_counts_but_no_picture():
    d = toy()
    view = threshold_explorer(d["scores"], d["anomalous"], mode="static")
    assert view.n_images == 0 and "<img" not in view.data and 'class="dgmx-m"' not in view.data
    assert page_data(view.data)["line_y"] == []


# ---------------------------------------------------------------------------------------------- live view
def test_live_slider_recomputes_threshold_rates_and_rings():
    d = toy()
    live = threshold_explorer(**d, marks={"p1": -12.0, "fixed": -60.0}, mode="live")
    assert isinstance(live, LiveThresholdExplorer)
    normal, anomalous = d["scores"][~d["anomalous"]], d["scores"][d["anomalous"]]
    n0 = live.n_updates
    for j in (0, 17, len(live.td.grid) - 1):
        live.slider.value = j
        ref = threshold_rates(normal, anomalous, live.td.grid[j])
        assert {k: live.rates[k] for k in ref} == ref
        assert live.overlay.value.count("<circle") == sum(
            1 for _, _, i in live.td.picture[2] if d["scores"][i] < live.td.grid[j])
    assert live.n_updates == n0 + 3
    assert live.rates["misses"] == 0 and live.rates["false_alarms"] == len(normal)  # top of the grid flags all
    live.jump.value = live.td.mark_index["fixed"]
    assert live.threshold == -60.0 and "-60" in live.readout.value


def test_auto_mode_gives_both_views(monkeypatch):
    monkeypatch.delenv("DGMLAB_EXPLORER_MODE", raising=False)
    view = threshold_explorer(**toy())
    assert isinstance(view, ExplorerView) and isinstance(view.static, StaticView)
    assert isinstance(view.live, LiveThresholdExplorer)
    monkeypatch.setenv("DGMLAB_EXPLORER_MODE", "static")
    assert isinstance(threshold_explorer(**toy()), StaticView)


# ------------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("change, message", [
    ({"scores": np.array([0.0, np.nan, 1.0, 2.0])}, "non-finite"),
    ({"scores": np.zeros((4, 2))}, "1-D"),
    ({"anomalous": np.zeros(4, bool)}, "some points True"),
    ({"anomalous": np.array([0, 1, 2, 1])}, "booleans"),
    ({"anomalous": np.array([True, False])}, "one value per score"),
    ({"labels": np.array([0, 1, 2, 3]), "class_names": ["a", "b"]}, "name every class"),
    ({"class_names": ["a", "b"]}, "without labels"),
    ({"labels": np.array([0, 1, 0, 1]), "colors": ["red"]}, "one colour per class"),
    ({"labels": np.array([0, 1, 0, 1]), "colors": ["red", "notacolour"]}, "matplotlib colours"),
    ({"hours": np.arange(4.0)}, "go together"),
    ({"hours": np.arange(4.0), "day": np.array([0, 0, 1, 1]), "days": [7]}, "hold no points"),
    ({"days": [0]}, "without day and hours"),
    ({"marks": {"x": float("nan")}}, "finite"),
    ({"marks": [-1.0]}, "dict"),
    ({"initial": "nope"}, "not one of the marks"),
    ({"grid": 3}, "between 10 and 2000"),
    ({"mode": "both"}, "mode must be one of"),
    ({"linthresh": -1.0, "hours": np.arange(4.0), "day": np.array([0, 0, 1, 1])}, "linthresh"),
])
def test_bad_input_gives_one_clear_error(change, message):
    args = {"scores": np.array([-1.0, -50.0, -2.0, -80.0]), "anomalous": np.array([False, True, False, True]),
            "mode": "static"}
    args.update(change)
    scores, anomalous = args.pop("scores"), args.pop("anomalous")
    with pytest.raises((ValueError, TypeError), match=message):
        threshold_explorer(scores, anomalous, **args)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_DRIVER = """<script>
window.addEventListener("load", function () { setTimeout(function () {
  var out = [];
  document.querySelectorAll(".dgmx-t").forEach(function (root) {
    var s = root.querySelector("input.dgmx-slider"), res = {ready: root.getAttribute("data-ready")};
    res.initial = [+root.getAttribute("data-selected"), JSON.parse(root.getAttribute("data-counts"))];
    s.value = "40"; s.dispatchEvent(new Event("input", {bubbles: true}));
    res.moved = [+root.getAttribute("data-selected"), JSON.parse(root.getAttribute("data-counts")),
                 root.querySelectorAll(".dgmx-m.dgmx-on").length];
    var img = root.querySelector(".dgmx-days img"), svg = root.querySelector(".dgmx-days svg");
    var a = img.getBoundingClientRect(), c = svg.getBoundingClientRect();
    res.boxes = [a.width, a.height, c.width, c.height];
    out.push(res);
  });
  var pre = document.createElement("pre"); pre.id = "result"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 200); });
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_two_views_on_one_page_in_headless_chromium(tmp_path):
    """A real browser, a narrow window: both views start, the slider shows threshold_rates' counts, and the ring
    overlay scales with the picture."""
    import functools
    import http.server
    import threading

    d = toy(seed=2)
    views = [threshold_explorer(**d, marks={"fixed": -60.0}, mode="static") for _ in range(2)]
    save_page([*views, BROWSER_DRIVER], tmp_path / "index.html")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
                              "--window-size=700,1600", "--virtual-time-budget=5000", "--dump-dom",
                              f"http://127.0.0.1:{server.server_address[1]}/index.html"],
                             capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
    found = re.search(r'<pre id="result">(.*?)</pre>', res.stdout, re.S)
    assert found, res.stderr[-2000:]
    states = json.loads(html.unescape(found.group(1)))
    data = page_data(views[0].data)
    normal, anomalous = d["scores"][~d["anomalous"]], d["scores"][d["anomalous"]]
    assert len(states) == 2
    for st in states:
        assert st["ready"] == "1"
        for j, counts in (st["initial"], st["moved"][:2]):
            ref = threshold_rates(normal, anomalous, data["t"][j])
            assert counts == [ref["false_alarms"], ref["misses"]]
        rings = [int(k) for k in re.findall(r'<circle class="dgmx-m"[^>]*data-k="(\d+)"', views[0].data)]
        assert st["moved"][0] == 40 and st["moved"][2] == sum(k <= 40 for k in rings)
        w_img, h_img, w_svg, h_svg = st["boxes"]
        assert w_img < 700 and abs(w_img - w_svg) < 1 and abs(h_img - h_svg) < 1, st["boxes"]
