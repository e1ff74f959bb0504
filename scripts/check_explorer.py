"""Check the kernel-free explorers in a real browser (headless Chromium), without a kernel or network.

What it does:

1. builds a test page with three static views from ``dgmlab.widgets`` over an analytic decoder (a blob whose
   position follows ``z``; no training needed): a latent map with encoded points, a latent map over dims (0, 2) of a
   3-D latent space, and a class-conditional view. Or, with ``--page``, takes a page of the built book;
2. serves it on 127.0.0.1 and injects a self-test script into the served copy only (the views themselves carry no
   test code). The self-test scrolls to every view, hit-tests cell centres with ``document.elementFromPoint``,
   fires mouse-move / click / mouse-leave / arrow-key events there and checks that the large image shows the hovered
   or kept cell's decoding; it also checks unique ids, that every image decoded, and that no resource came from
   another host. It writes a JSON verdict into the page;
3. runs ``chromium --headless --dump-dom`` and reads the verdict, then takes a screenshot of the page after the
   self-test (``--screenshot``), cropped to the views.

``--jupyterlab`` checks the other half instead: it starts JupyterLab on 127.0.0.1 with a two-cell notebook (a
latent explorer and a class-conditional explorer in the default ``mode="auto"``), opens it in headless Chromium
driven by playwright-core, runs it on a real kernel, then uses the real mouse: hover and click on the static view
inside the JupyterLab output, drag a live slider and pick a style in the live dropdown, and checks that the kernel
decoded again and the images changed.

Usage::

    python scripts/check_explorer.py                       # standalone test page; exit status 0 = pass
    python scripts/check_explorer.py --screenshot /tmp/explorer.png
    python scripts/check_explorer.py --page _build/html/book/appendix/explorer_demo.html --root _build/html
    npm i --prefix /tmp/pw playwright-core && python scripts/check_explorer.py --jupyterlab --playwright /tmp/pw

Needs the Debian package ``chromium`` (or ``--chromium PATH``); ``--jupyterlab`` also needs node and
playwright-core (only as a driver: it uses the same Chromium).
"""

from __future__ import annotations

import argparse
import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SELFTEST_JS = r"""
<script>
(function () {
  function mouse(type, el, x, y) {
    el.dispatchEvent(new MouseEvent(type, {bubbles: type !== "mouseenter" && type !== "mouseleave",
                                           cancelable: true, clientX: x, clientY: y, view: window}));
  }
  function key(el, k) { el.dispatchEvent(new KeyboardEvent("keydown", {key: k, bubbles: true, cancelable: true})); }
  function centre(el, i, j, gx, gy) {
    var r = el.getBoundingClientRect();
    return [r.left + (j + 0.5) * r.width / gx, r.top + (i + 0.5) * r.height / gy];
  }
  function run() {
    var results = [], ok = true;
    function check(name, cond, detail) {
      results.push({name: name, ok: !!cond, detail: detail === undefined ? "" : String(detail)});
      if (!cond) ok = false;
    }
    var roots = Array.prototype.slice.call(document.querySelectorAll(".dgmx"));
    check("explorer views found", roots.length > 0, roots.length + " views");
    var ids = {};
    roots.forEach(function (r) { ids[r.id] = 1; });
    check("element ids are unique", Object.keys(ids).length === roots.length, Object.keys(ids).length);
    var imgs = Array.prototype.slice.call(document.querySelectorAll(".dgmx img"));
    var broken = imgs.filter(function (im) { return !(im.complete && im.naturalWidth > 0); });
    check("every image decoded", imgs.length > 0 && broken.length === 0, imgs.length + " images, " + broken.length + " broken");
    roots.forEach(function (root) {
      var tag = root.id;
      check(tag + ": script initialised the view", root.getAttribute("data-ready") === "1");
      root.scrollIntoView({block: "start"});
      if (root.classList.contains("dgmx-latent")) {
        var gx = +root.getAttribute("data-gx"), gy = +root.getAttribute("data-gy");
        var map = root.querySelector(".dgmx-map"), cells = root.querySelectorAll(".dgmx-cell");
        var big = root.querySelector(".dgmx-big"), out = root.querySelector(".dgmx-readout");
        check(tag + ": one cell per grid point", cells.length === gx * gy, cells.length + " cells, grid " + gx + "x" + gy);
        var k1 = 1 * gx + 2, p1 = centre(map, 1, 2, gx, gy);
        var hit = document.elementFromPoint(p1[0], p1[1]);
        check(tag + ": a point on the map hits the map", hit && map.contains(hit), hit ? hit.className : "nothing");
        mouse("mousemove", hit || map, p1[0], p1[1]);
        check(tag + ": hover shows the hovered cell", big.src === cells[k1].src && root.getAttribute("data-shown") === String(k1),
              "shown " + root.getAttribute("data-shown") + ", readout: " + out.textContent);
        check(tag + ": read-out says hover", /hover/.test(out.textContent), out.textContent);
        var k2 = (gy - 1) * gx + (gx - 1), p2 = centre(map, gy - 1, gx - 1, gx, gy);
        var hit2 = document.elementFromPoint(p2[0], p2[1]) || map;
        mouse("mousemove", hit2, p2[0], p2[1]);
        mouse("click", hit2, p2[0], p2[1]);
        check(tag + ": click keeps the clicked cell", root.getAttribute("data-selected") === String(k2) && big.src === cells[k2].src,
              "selected " + root.getAttribute("data-selected"));
        check(tag + ": different cells decode differently", cells[k1].src !== cells[k2].src);
        mouse("mousemove", hit, p1[0], p1[1]);
        mouse("mouseleave", map, 0, 0);
        check(tag + ": leaving the map shows the kept cell again", big.src === cells[k2].src && /selected/.test(out.textContent),
              out.textContent);
        key(root, "ArrowUp");
        key(root, "ArrowLeft");
        var k3 = k2 - gx - 1;
        check(tag + ": arrow keys move the kept cell", root.getAttribute("data-selected") === String(k3) && big.src === cells[k3].src,
              "selected " + root.getAttribute("data-selected"));
        var buttons = root.querySelectorAll("button[data-layer]");
        if (buttons.length) {
          buttons[1].click();
          var off = !map.classList.contains("dgmx-points");
          buttons[0].click();
          check(tag + ": layer buttons switch decodings / encoded points", off && map.classList.contains("dgmx-points"));
        }
        mouse("mousemove", hit, p1[0], p1[1]);  // leave a hover box visible for the screenshot
      } else if (root.classList.contains("dgmx-classes")) {
        var rows = root.querySelectorAll(".dgmx-row[data-row]"), bigs = root.querySelectorAll(".dgmx-bigc");
        var out2 = root.querySelector(".dgmx-readout");
        var nc = +root.getAttribute("data-classes");
        check(tag + ": one row per style", rows.length === +root.getAttribute("data-styles"), rows.length);
        check(tag + ": one large image per class", bigs.length === nc, bigs.length);
        function same(r) {
          var th = rows[r].querySelectorAll(".dgmx-thumb");
          for (var c = 0; c < nc; c++) if (bigs[c].src !== th[c].src) return false;
          return th.length === nc;
        }
        var r1 = Math.min(2, rows.length - 1), r2 = Math.min(3, rows.length - 1);
        var rr = rows[r1].getBoundingClientRect();
        var hitr = document.elementFromPoint(rr.left + rr.width / 2, rr.top + rr.height / 2);
        check(tag + ": a point on a row hits that row", hitr && rows[r1].contains(hitr), hitr ? hitr.className : "nothing");
        mouse("mouseenter", rows[r1], 0, 0);
        check(tag + ": hovering a row shows that style for every class", same(r1) && /hover|selected/.test(out2.textContent), out2.textContent);
        mouse("click", hitr || rows[r2], rr.left + rr.width / 2, rr.top + rr.height / 2);
        mouse("mouseleave", root.querySelector(".dgmx-rows"), 0, 0);
        check(tag + ": a click keeps the row", root.getAttribute("data-selected") === String(r1) && same(r1), out2.textContent);
        key(root, "ArrowDown");
        check(tag + ": arrow down moves to the next style", root.getAttribute("data-selected") === String(Math.min(r1 + 1, rows.length - 1)) && same(Math.min(r1 + 1, rows.length - 1)),
              "selected " + root.getAttribute("data-selected"));
      }
    });
    var foreign = performance.getEntriesByType("resource").map(function (e) { return e.name; })
      .filter(function (u) { return u.indexOf(location.origin + "/") !== 0 && u.indexOf("data:") !== 0; });
    check("no request left 127.0.0.1", foreign.length === 0, foreign.join(" "));
    var pre = document.createElement("pre");
    pre.id = "dgmx-selftest";
    pre.style.cssText = "position:fixed;top:0;right:0;z-index:9999;max-width:420px;max-height:60%;overflow:auto;font-size:10px;margin:0;padding:4px;background:" + (ok ? "#d4f7d4" : "#f7d4d4");
    // Where the views sit on the page, so that the screenshot can be cropped to them.
    var boxes = roots.map(function (r) { var b = r.getBoundingClientRect();
      return [Math.round(b.left + window.scrollX), Math.round(b.top + window.scrollY), Math.round(b.width), Math.round(b.height)]; });
    pre.textContent = JSON.stringify({ok: ok, checks: results, boxes: boxes}, null, 1);
    document.body.appendChild(pre);
    document.title = ok ? "SELFTEST PASS" : "SELFTEST FAIL";
    window.scrollTo(0, 0);
  }
  window.addEventListener("load", function () { setTimeout(run, 100); });
})();
</script>
"""


def build_test_page(path: Path) -> dict:
    """Write a page with three static views over an analytic decoder; returns facts the check compares with."""
    import torch

    from dgmlab.widgets import class_conditional_explorer, latent_explorer, save_page

    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")

    def blob(z: torch.Tensor) -> torch.Tensor:
        # A bright blob that moves right with z[0] and up with z[-1]; its width grows with |z[1]| when z_dim = 3.
        width = 2.5 + (z[:, 1].abs() if z.shape[1] == 3 else torch.zeros(len(z)))
        cx, cy = 14 + 3.5 * z[:, 0], 14 - 3.5 * z[:, -1]
        d2 = (xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2
        return torch.exp(-d2 / (2 * width[:, None, None] ** 2))

    def generate(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # Class y adds a vertical bar at column 3 + 2y: the columns of the view must differ by class.
        img = blob(z).clone()
        img[torch.arange(len(y)), 4:24, (3 + 2 * y)] = 1.0
        return img

    g = torch.Generator().manual_seed(0)
    pts = torch.randn(600, 2, generator=g) * 1.2
    labels = (pts[:, 0] > 0).long() + 2 * (pts[:, 1] > 0).long()
    styles = torch.randn(6, 2, generator=g)
    views = [
        latent_explorer(blob, 2, mode="static", points=pts, labels=labels,
                        label_names=["left-low", "right-low", "left-high", "right-high"],
                        title="check 1: 2-D latent map with encoded points"),
        latent_explorer(blob, 3, mode="static", grid=(9, 7), extent=((-2, 2), (-3, 3)), dims=(0, 2),
                        base_z=[0.0, 0.5, 0.0], title="check 2: dims (0, 2) of a 3-D latent space, 9x7 grid"),
        class_conditional_explorer(generate, styles, 4, class_names=["a", "b", "c", "d"], style_images=blob(styles),
                                   mode="static", title="check 3: class-conditional view"),
    ]
    save_page(views, path, title="dgmlab explorer check")
    return {"views": len(views), "ids": [v.element_id for v in views]}


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves ``directory``; the page at ``inject_path`` gets the self-test script before ``</body>``."""

    inject_path = "/"

    def do_GET(self):  # noqa: N802 - http.server API
        if self.path.split("?")[0].split("#")[0] != self.inject_path:
            return super().do_GET()
        local = Path(self.translate_path(self.inject_path))
        text = local.read_text(encoding="utf-8")
        text = text.replace("</body>", SELFTEST_JS + "</body>", 1) if "</body>" in text else text + SELFTEST_JS
        data = text.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def serve(root: Path, inject_path: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = type("Handler", (_Handler,), {"inject_path": inject_path})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}{inject_path}"


def chromium(binary: str, args: list[str], timeout: int) -> str:
    profile = tempfile.mkdtemp(prefix="dgmx-chromium-")
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={profile}", *args]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if res.returncode != 0:
        raise RuntimeError(f"chromium exited with {res.returncode}: {res.stderr[-2000:]}")
    return res.stdout


def take_screenshot(args, url: str, boxes: list[list[int]]) -> None:
    """Screenshot of the page after the self-test, cropped to the explorer views (a tall window, then a crop:
    headless Chromium captures the top of the page, so views far down a book page need the height)."""
    from PIL import Image

    width, height = (int(v) for v in args.window.split(","))
    top = max(0, min(b[1] for b in boxes) - 30) if boxes else 0
    bottom = max(b[1] + b[3] for b in boxes) + 20 if boxes else height
    shot = Path(args.screenshot).resolve()
    shot.parent.mkdir(parents=True, exist_ok=True)
    chromium(args.chromium, [f"--window-size={width},{min(max(height, bottom), 16000)}", "--virtual-time-budget=10000",
                             f"--screenshot={shot}", url + "#selftest"], args.timeout)
    image = Image.open(shot)
    image.crop((0, top, image.width, min(bottom, image.height))).save(shot)


# ------------------------------------------------------------------------------------------- JupyterLab (live)

LAB_CELL = """import torch
from dgmlab.widgets import latent_explorer

yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")

def blob(z):
    cx, cy = 14 + 3.5 * z[:, 0], 14 - 3.5 * z[:, 1]
    return torch.exp(-((xx - cx[:, None, None]) ** 2 + (yy - cy[:, None, None]) ** 2) / 12.5)

latent_explorer(blob, 2, grid=9, title="JupyterLab check")"""

LAB_CELL_CLASSES = """from dgmlab.widgets import class_conditional_explorer

def generate(z, y):
    img = blob(z).clone()
    img[torch.arange(len(y)), 4:24, 3 + 2 * y] = 1.0  # a bar whose column encodes the class
    return img

class_conditional_explorer(generate, torch.randn(4, 2, generator=torch.Generator().manual_seed(0)), 5,
                           title="JupyterLab class check")"""

LAB_DRIVER = r"""
const { chromium } = require("playwright-core");
(async () => {
  const [url, exe, shot] = process.argv.slice(2);
  const results = [];
  const check = (name, ok, detail) => results.push({name, ok: !!ok, detail: detail === undefined ? "" : String(detail)});
  const errors = [];
  const browser = await chromium.launch({executablePath: exe, headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", "--no-first-run"]});
  try {
    const page = await browser.newPage({viewport: {width: 1280, height: 1500}});
    page.on("pageerror", e => errors.push(String(e)));
    await page.goto(url, {timeout: 180000});
    await page.waitForFunction(() => {
      const app = window.jupyterapp, w = app && app.shell.currentWidget;
      const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
      return k && k.status === "idle";
    }, null, {timeout: 180000, polling: 500});
    await page.evaluate(() => window.jupyterapp.commands.execute("notebook:run-all-cells"));
    await page.waitForFunction(() => document.querySelectorAll('.dgmx[data-ready="1"]').length === 2, null,
                               {timeout: 180000, polling: 500});
    check("both static views initialised inside JupyterLab outputs", true);
    await page.waitForSelector(".widget-slider", {timeout: 180000});
    check("live widget rendered (sliders present)", true);

    // Static view, real mouse: hover cell 0, click the last cell.
    const map = await page.$(".dgmx-map");
    await map.scrollIntoViewIfNeeded();
    const box = await map.boundingBox();
    const gx = +(await page.getAttribute(".dgmx-latent", "data-gx"));
    const gy = +(await page.getAttribute(".dgmx-latent", "data-gy"));
    const cells = await page.$$eval(".dgmx-cell", es => es.map(e => e.src));
    await page.mouse.move(box.x + box.width * 0.5 / gx, box.y + box.height * 0.5 / gy);
    const big0 = await page.$eval(".dgmx-big", e => e.src);
    check("static view in JupyterLab: hover shows the hovered cell", big0 === cells[0]);
    await page.mouse.click(box.x + box.width * (gx - 0.5) / gx, box.y + box.height * (gy - 0.5) / gy);
    const sel = await page.getAttribute(".dgmx-latent", "data-selected");
    check("static view in JupyterLab: click keeps the clicked cell", sel === String(gx * gy - 1), "selected " + sel);

    // Live view: drag the first slider with the mouse; the kernel decodes and sends a new image.
    const decodings = () => page.evaluate(() => {
      const m = Array.from(document.querySelectorAll(".widget-html")).map(e => e.textContent).join(" ")
        .match(/(\d+) decodings so far/);
      return m ? +m[1] : -1;
    });
    const liveImages = () => page.$$eval("img.widget-image", es => es.map(e => e.src));
    const marker = () => page.evaluate(() => {
      const r = document.querySelector(".widget-html svg rect");
      return r ? r.getAttribute("x") : null;
    });
    const n0 = await decodings(), imgs0 = await liveImages(), m0 = await marker();
    check("live view shows its first decoding", n0 >= 1 && imgs0.length >= 2, n0 + " decodings, " + imgs0.length + " images");
    const handle = await page.$(".widget-slider .noUi-handle");
    await handle.scrollIntoViewIfNeeded();
    const hb = await handle.boundingBox();
    await page.mouse.move(hb.x + hb.width / 2, hb.y + hb.height / 2);
    await page.mouse.down();
    await page.mouse.move(hb.x + hb.width / 2 + 45, hb.y + hb.height / 2, {steps: 5});
    await page.mouse.up();
    await page.waitForFunction(n => {
      const m = Array.from(document.querySelectorAll(".widget-html")).map(e => e.textContent).join(" ")
        .match(/(\d+) decodings so far/);
      return m && +m[1] > n;
    }, n0, {timeout: 60000, polling: 200});
    await page.waitForTimeout(1500);
    const n1 = await decodings(), imgs1 = await liveImages(), m1 = await marker();
    const readout = await page.evaluate(() => Array.from(document.querySelectorAll(".widget-html"))
      .map(e => e.textContent).find(t => /decodings so far/.test(t)));
    check("live view: dragging a slider makes the kernel decode again", n1 > n0, n0 + " -> " + n1 + " decodings; " + readout);
    check("live view: the decoded image changes", imgs1.length === imgs0.length && imgs1.some((s, i) => s !== imgs0[i]));
    check("live view: the map's cross-hair moves right", m0 !== null && +m1 > +m0, m0 + " -> " + m1);
    check("live view: the read-out follows the slider", /z\[0\] = (?!0\.00)/.test(readout || ""), readout);

    // Class-conditional views: a click on a static row; a new style picked in the live dropdown.
    const row = await page.$('.dgmx-classes .dgmx-row[data-row="2"]');
    await row.scrollIntoViewIfNeeded();
    await row.click();
    const csel = await page.getAttribute(".dgmx-classes", "data-selected");
    check("class view in JupyterLab: click keeps the clicked style", csel === "2", "selected " + csel);
    const classReadout = () => page.evaluate(() => Array.from(document.querySelectorAll(".widget-html"))
      .map(e => e.textContent).find(t => /stored value/.test(t)) || "");
    const r0 = await classReadout();
    const picker = page.locator(".widget-dropdown select").first();
    await picker.scrollIntoViewIfNeeded();
    await picker.selectOption({index: 2});
    await page.waitForFunction(() => Array.from(document.querySelectorAll(".widget-html"))
      .some(e => /^style 2: /.test(e.textContent)), null, {timeout: 60000, polling: 200});
    const r1 = await classReadout();
    check("class live view: picking a style makes the kernel generate it", r0 !== r1 && /^style 2: /.test(r1), r0 + " -> " + r1);
    const ours = errors.filter(e => /dgmx/.test(e));
    check("no JavaScript errors from the explorer", ours.length === 0, ours.join(" | "));
    if (shot) {
      const out = await page.$(".jp-OutputArea");
      await out.scrollIntoViewIfNeeded();
      await out.screenshot({path: shot});
      const outs = await page.$$(".jp-OutputArea");
      await outs[outs.length - 1].scrollIntoViewIfNeeded();
      await outs[outs.length - 1].screenshot({path: shot.replace(/\.png$/, "") + "-classes.png"});
    }
  } catch (e) {
    check("JupyterLab run finished", false, String(e).slice(0, 500));
  } finally {
    await browser.close();
  }
  console.log("RESULT " + JSON.stringify(results));
})();
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_jupyterlab(args) -> tuple[list[dict], float]:
    """Open a notebook calling both explorers in a real JupyterLab (headless Chromium driven by playwright-core),
    run it on a real kernel, use the static views with the mouse, drag a live slider and pick a live style."""
    import nbformat
    import urllib.request

    pw = Path(args.playwright).resolve()
    if not (pw / "node_modules" / "playwright-core").exists():
        print(f"playwright-core not found under {pw}; install it with: npm i --prefix {pw} playwright-core")
        raise SystemExit(2)
    work = Path(tempfile.mkdtemp(prefix="dgmx-lab-"))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(LAB_CELL),
                                         nbformat.v4.new_code_cell(LAB_CELL_CLASSES)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, work / "explorer_check.ipynb")
    (work / "driver.js").write_text(LAB_DRIVER)
    # No "get Jupyter news?" prompt over the outputs in the screenshot.
    settings = work / "lab_settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port, token = _free_port(), "dgmx-check"
    env = dict(os.environ, OMP_NUM_THREADS="1", JUPYTER_CONFIG_DIR=str(work / "jupyter_config"),
               JUPYTERLAB_SETTINGS_DIR=str(work / "lab_settings"))
    log = open(work / "lab.log", "w")
    lab = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
                            f"--ServerApp.token={token}", f"--ServerApp.root_dir={work}", "--allow-root",
                            "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=",
                            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
                           stdout=subprocess.DEVNULL, stderr=log, env=env)
    t0 = time.time()
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(1)
        url = f"http://127.0.0.1:{port}/lab/tree/explorer_check.ipynb?token={token}"
        shot = str(Path(args.screenshot).resolve()) if args.screenshot else ""
        res = subprocess.run(["node", str(work / "driver.js"), url, args.chromium, shot], capture_output=True,
                             text=True, timeout=600, env=dict(env, NODE_PATH=str(pw / "node_modules")))
        line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            log.flush()
            raise RuntimeError(f"the JupyterLab driver gave no result: {res.stdout[-1500:]} {res.stderr[-1500:]}\n"
                               f"JupyterLab log: {(work / 'lab.log').read_text()[-1500:]}")
        return json.loads(line[len("RESULT "):]), time.time() - t0
    finally:
        lab.terminate()
        try:
            lab.wait(timeout=20)
        except subprocess.TimeoutExpired:
            lab.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--page", help="an HTML page to check instead of the generated test page")
    ap.add_argument("--root", help="folder served as the site root (default: the page's folder)")
    ap.add_argument("--screenshot", default=None, help="PNG file for a screenshot after the self-test")
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser") or "chromium")
    ap.add_argument("--window", default="1280,1900")
    ap.add_argument("--timeout", type=int, default=120)
    ap.add_argument("--jupyterlab", action="store_true",
                    help="instead: run a notebook in a real JupyterLab and check the static and the live view there")
    ap.add_argument("--playwright", default="/tmp/pw", help="folder holding node_modules/playwright-core")
    args = ap.parse_args(argv)

    if not shutil.which(args.chromium) and not os.path.exists(args.chromium):
        print(f"chromium not found ({args.chromium}); install the Debian package 'chromium' or pass --chromium PATH")
        return 2
    if args.jupyterlab:
        checks, seconds = check_jupyterlab(args)
        for c in checks:
            print(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']}" + (f"  [{c['detail']}]" if c["detail"] else ""))
        ok = bool(checks) and all(c["ok"] for c in checks)
        print(f"{'PASS' if ok else 'FAIL'}: {len(checks)} checks in JupyterLab + headless Chromium ({seconds:.0f} s)")
        return 0 if ok else 1
    workdir = None
    if args.page:
        page = Path(args.page).resolve()
        root = Path(args.root).resolve() if args.root else page.parent
        expected = None
    else:
        workdir = Path(tempfile.mkdtemp(prefix="dgmx-check-"))
        root, page = workdir, workdir / "index.html"
        expected = build_test_page(page)
    inject = "/" + page.relative_to(root).as_posix()
    server, url = serve(root, inject)
    t0 = time.time()
    try:
        dom = chromium(args.chromium, [f"--window-size={args.window}", "--virtual-time-budget=10000", "--dump-dom",
                                       url + "#selftest"], args.timeout)
        match = re.search(r'<pre id="dgmx-selftest"[^>]*>(.*?)</pre>', dom, re.S)
        if not match:
            print("FAIL: the self-test did not report (no <pre id=dgmx-selftest> in the DOM); is JavaScript broken?")
            return 1
        verdict = json.loads(html.unescape(match.group(1)))
        if args.screenshot:
            take_screenshot(args, url, verdict.get("boxes", []))
    finally:
        server.shutdown()
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    for c in verdict["checks"]:
        print(f"{'ok  ' if c['ok'] else 'FAIL'} {c['name']}" + (f"  [{c['detail']}]" if c["detail"] else ""))
    ok = verdict["ok"]
    if expected is not None:
        found = sum(1 for c in verdict["checks"] if c["name"].endswith("script initialised the view"))
        if found != expected["views"]:
            print(f"FAIL expected {expected['views']} views, the browser saw {found}")
            ok = False
    print(f"{'PASS' if ok else 'FAIL'}: {len(verdict['checks'])} checks in headless Chromium ({time.time() - t0:.1f} s)"
          + (f"; screenshot {args.screenshot}" if args.screenshot else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
