"""Kernel-free views: self-contained HTML + inline CSS/JS over precomputed images (inline base64 PNGs).

Nothing here loads anything from the network or needs require.js: a view is one ``<div>`` holding its style, its
images as ``data:`` URIs and a small vanilla-JS script that wires hover, click and arrow keys. Every view gets a
unique element id, so several views can share a page (a book chapter, a JupyterLab notebook).

The script finds its view through ``document.currentScript`` (it sits inside the view), falling back to the id on
the next tick for front ends that run output scripts before attaching them to the page.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
import uuid

import numpy as np
from IPython.display import HTML

from dgmlab.widgets.images import data_uri, png_bytes

ACCENT = "#e4572e"

_CSS = """
.dgmx{font:13px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:.6em 0;outline:none}
.dgmx *{box-sizing:border-box}
.dgmx img{max-width:none;margin:0;padding:0;border:0;display:block;background:transparent;
  image-rendering:crisp-edges;image-rendering:pixelated}
.dgmx-title{font-weight:600;margin-bottom:.3em}
.dgmx-body{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.dgmx-side{display:flex;flex-direction:column;gap:6px;flex:1 1 200px;min-width:180px;max-width:100%}
.dgmx-readout{font-variant-numeric:tabular-nums;min-height:1.4em}
.dgmx-help{font-size:11px;opacity:.75;max-width:320px}
.dgmx-plot{display:inline-grid;grid-template-columns:auto auto;font-size:11px}
.dgmx-ylab{display:flex;flex-direction:column;justify-content:space-between;align-items:flex-end;padding-right:4px}
.dgmx-xlab{display:flex;justify-content:space-between;padding-top:2px}
.dgmx-an{font-style:italic}
.dgmx-map{position:relative;cursor:crosshair;background:#000;user-select:none}
.dgmx-grid{display:grid}
.dgmx .dgmx-scatter{position:absolute;left:0;top:0;width:100%;height:100%;pointer-events:none;display:none;
  image-rendering:auto !important}
.dgmx-map.dgmx-points{background:#fff}
.dgmx-map.dgmx-points .dgmx-grid{opacity:.3}
.dgmx .dgmx-map.dgmx-points .dgmx-scatter{display:block}
.dgmx-box{position:absolute;pointer-events:none;display:none;border:2px solid __ACCENT__}
.dgmx-hov{border-style:dashed}
.dgmx-buttons button{font:inherit;font-size:12px;padding:1px 8px;margin-right:4px;border:1px solid #888;
  border-radius:3px;background:transparent;color:inherit;cursor:pointer}
.dgmx-buttons button[aria-pressed=true]{background:__ACCENT__;border-color:__ACCENT__;color:#fff}
.dgmx-legend{display:flex;flex-wrap:wrap;gap:2px 10px;font-size:11px;max-width:320px}
.dgmx-sw{display:inline-block;width:9px;height:9px;border-radius:50%;margin-right:3px;vertical-align:middle}
.dgmx-rows{display:flex;flex-direction:column;gap:1px}
.dgmx-row{display:flex;gap:1px;padding:2px;border-radius:3px;cursor:pointer;border:2px solid transparent}
.dgmx-row:hover{border-color:rgba(128,128,128,.6);border-style:dashed}
.dgmx-row.dgmx-on{border-color:__ACCENT__;border-style:solid}
.dgmx-head{cursor:default}
.dgmx-head:hover{border-color:transparent}
.dgmx-head div{font-size:10px;text-align:center;overflow:hidden;white-space:nowrap}
.dgmx-gap{margin-right:6px}
.dgmx-strip{display:flex;flex-wrap:wrap;gap:4px}
.dgmx-strip figure{margin:0;display:flex;flex-direction:column;align-items:center;font-size:11px}
""".replace("__ACCENT__", ACCENT)

_JS_COMMON = """
  function boot(init) {
    var s = document.currentScript;
    var root = s && s.parentNode && s.parentNode.closest ? s.parentNode.closest(".dgmx") : null;
    function go(r) { if (r && !r.getAttribute("data-ready")) { r.setAttribute("data-ready", "1"); init(r); } }
    if (root && root.id === ID) go(root); else setTimeout(function () { go(document.getElementById(ID)); }, 0);
  }
  function fmt(v) { return (v < 0 ? "\\u2212" : "") + Math.abs(v).toFixed(2); }
"""

_JS_LATENT = """
  boot(function (root) {
    var gx = +root.getAttribute("data-gx"), gy = +root.getAttribute("data-gy");
    var xs = JSON.parse(root.getAttribute("data-xs")), ys = JSON.parse(root.getAttribute("data-ys"));
    var names = JSON.parse(root.getAttribute("data-names"));
    var map = root.querySelector(".dgmx-map"), cells = root.querySelectorAll(".dgmx-cell");
    var big = root.querySelector(".dgmx-big"), out = root.querySelector(".dgmx-readout");
    var pinBox = root.querySelector(".dgmx-pin"), hovBox = root.querySelector(".dgmx-hov");
    var pinned = +root.getAttribute("data-selected"), shown = -1;
    function put(box, k) {
      var i = Math.floor(k / gx), j = k % gx;
      box.style.left = (100 * j / gx) + "%"; box.style.top = (100 * i / gy) + "%";
      box.style.width = (100 / gx) + "%"; box.style.height = (100 / gy) + "%"; box.style.display = "block";
    }
    function show(k, how) {
      var i = Math.floor(k / gx), j = k % gx;
      shown = k; big.src = cells[k].src;
      out.textContent = names[0] + " = " + fmt(xs[j]) + ",  " + names[1] + " = " + fmt(ys[i]) + "  (" + how + ")";
      root.setAttribute("data-shown", String(k));
    }
    function pin(k) {
      pinned = k; root.setAttribute("data-selected", String(k));
      put(pinBox, k); hovBox.style.display = "none"; show(k, "selected");
    }
    function cellAt(ev) {
      var r = map.getBoundingClientRect();
      var j = Math.floor((ev.clientX - r.left) / r.width * gx), i = Math.floor((ev.clientY - r.top) / r.height * gy);
      return (i < 0 || j < 0 || i >= gy || j >= gx) ? -1 : i * gx + j;
    }
    map.addEventListener("mousemove", function (ev) {
      var k = cellAt(ev);
      if (k < 0) return;
      if (k === pinned) hovBox.style.display = "none"; else put(hovBox, k);
      if (k !== shown) show(k, k === pinned ? "selected" : "hover");
    });
    map.addEventListener("mouseleave", function () { hovBox.style.display = "none"; show(pinned, "selected"); });
    map.addEventListener("click", function (ev) {
      var k = cellAt(ev);
      if (k >= 0) pin(k);
      if (root.focus) root.focus({preventScroll: true});
    });
    root.addEventListener("keydown", function (ev) {
      var i = Math.floor(pinned / gx), j = pinned % gx;
      if (ev.key === "ArrowLeft") j = Math.max(0, j - 1);
      else if (ev.key === "ArrowRight") j = Math.min(gx - 1, j + 1);
      else if (ev.key === "ArrowUp") i = Math.max(0, i - 1);
      else if (ev.key === "ArrowDown") i = Math.min(gy - 1, i + 1);
      else return;
      ev.preventDefault(); ev.stopPropagation(); pin(i * gx + j);
    });
    var buttons = root.querySelectorAll("button[data-layer]");
    Array.prototype.forEach.call(buttons, function (b) {
      b.addEventListener("click", function () {
        var pts = b.getAttribute("data-layer") === "points";
        if (pts) map.classList.add("dgmx-points"); else map.classList.remove("dgmx-points");
        Array.prototype.forEach.call(buttons, function (o) { o.setAttribute("aria-pressed", String(o === b)); });
      });
    });
    pin(pinned);
  });
"""

_JS_CLASSES = """
  boot(function (root) {
    var rows = root.querySelectorAll(".dgmx-row[data-row]"), table = root.querySelector(".dgmx-rows");
    var bigs = root.querySelectorAll(".dgmx-bigc"), bigSrc = root.querySelector(".dgmx-bigsrc");
    var out = root.querySelector(".dgmx-readout");
    var pinned = +root.getAttribute("data-selected");
    function show(r, how) {
      var th = rows[r].querySelectorAll(".dgmx-thumb");
      for (var c = 0; c < bigs.length; c++) bigs[c].src = th[c].src;
      var src = rows[r].querySelector(".dgmx-src");
      if (bigSrc && src) bigSrc.src = src.src;
      out.textContent = rows[r].getAttribute("data-name") + "  (" + how + ")";
      root.setAttribute("data-shown", String(r));
    }
    function pin(r) {
      if (rows[pinned]) rows[pinned].classList.remove("dgmx-on");
      pinned = r; rows[r].classList.add("dgmx-on"); root.setAttribute("data-selected", String(r));
      show(r, "selected");
    }
    Array.prototype.forEach.call(rows, function (row, r) {
      row.addEventListener("mouseenter", function () { show(r, r === pinned ? "selected" : "hover"); });
      row.addEventListener("click", function () { pin(r); if (root.focus) root.focus({preventScroll: true}); });
    });
    table.addEventListener("mouseleave", function () { show(pinned, "selected"); });
    root.addEventListener("keydown", function (ev) {
      var r = pinned;
      if (ev.key === "ArrowUp") r = Math.max(0, r - 1);
      else if (ev.key === "ArrowDown") r = Math.min(rows.length - 1, r + 1);
      else return;
      ev.preventDefault(); ev.stopPropagation(); pin(r);
    });
    pin(pinned);
  });
"""


class StaticView(HTML):
    """A kernel-free view: ``IPython.display.HTML`` holding one self-contained ``<div>``.

    Attributes: ``html`` (the markup, same as ``data``), ``element_id``, ``n_images`` (precomputed decodings held)
    and ``kind`` (``"latent"`` or ``"class-conditional"``). ``save(path)`` writes a standalone page.
    """

    def __init__(self, markup: str, element_id: str, n_images: int, kind: str):
        super().__init__(markup)
        self.element_id, self.n_images, self.kind = element_id, n_images, kind

    @property
    def html(self) -> str:
        return self.data

    def save(self, path: str | os.PathLike, title: str = "dgmlab explorer") -> str:
        """Write a standalone HTML page holding this view (atomically) and return its path."""
        return save_page([self], path, title)


def save_page(views, path: str | os.PathLike, title: str = "dgmlab explorer", extra_head: str = "") -> str:
    """Write one standalone HTML page holding ``views`` (StaticView objects or HTML strings), atomically."""
    body = "\n".join(v.data if isinstance(v, HTML) else str(v) for v in views)
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'{extra_head}</head>\n<body>\n{body}\n</body></html>\n')
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    return path


def new_id(prefix: str = "dgmx") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _attr(value) -> str:
    return html.escape(json.dumps(value), quote=True)


def _script(element_id: str, body: str) -> str:
    return f'<script>(function () {{\n  var ID = "{element_id}";{_JS_COMMON}{body}}})();</script>'


def _img(uri: str, cls: str, size: tuple[int, int], alt: str = "") -> str:
    w, h = size
    return f'<img class="{cls}" src="{uri}" width="{w}" height="{h}" alt="{html.escape(alt)}">'


def latent_view_html(cells: np.ndarray, xs: np.ndarray, ys_rows: np.ndarray, names: tuple[str, str], *,
                     title: str, cell_px: int, big_px: int, scatter_png: bytes | None = None,
                     legend: list[tuple[str, str]] | None = None, note: str = "", selected: int | None = None,
                     ) -> StaticView:
    """The latent-map view: a ``gy x gx`` mosaic of decodings (row 0 at the top, i.e. the largest second
    coordinate), an optional scatter layer of encoded points, and a large copy of the hovered or selected cell.

    ``cells`` holds uint8 pixels ``(gy*gx, H, W[, 3])`` in row-major order; ``ys_rows[i]`` is the second
    coordinate of row ``i`` (descending), ``xs[j]`` the first coordinate of column ``j``.
    """
    gy, gx = len(ys_rows), len(xs)
    if len(cells) != gx * gy:
        raise ValueError(f"expected {gx * gy} cells for a {gy}x{gx} grid, got {len(cells)}")
    h, w = cells.shape[1:3]
    uid = new_id()
    selected = (gy // 2) * gx + gx // 2 if selected is None else selected
    uris = [data_uri(png_bytes(c)) for c in cells]
    cell_h = max(1, round(cell_px * h / w))  # cells keep the images' aspect ratio
    cell_imgs = "".join(_img(u, "dgmx-cell", (cell_px, cell_h)) for u in uris)
    big_w = big_px
    big_h = round(big_px * h / w)
    scatter = ""
    buttons = ""
    if scatter_png is not None:
        scatter = f'<img class="dgmx-scatter" src="{data_uri(scatter_png)}" alt="encoded points">'
        buttons = ('<div class="dgmx-buttons">'
                   '<button type="button" data-layer="points" aria-pressed="true">encoded points</button>'
                   '<button type="button" data-layer="decodings" aria-pressed="false">decodings</button></div>')
    legend_html = ""
    if legend:
        legend_html = '<div class="dgmx-legend">' + "".join(
            f'<span><span class="dgmx-sw" style="background:{c}"></span>{html.escape(n)}</span>'
            for n, c in legend) + "</div>"
    x0, x1, y0, y1 = xs[0], xs[-1], ys_rows[-1], ys_rows[0]
    points_class = " dgmx-points" if scatter_png is not None else ""  # start on the encoded points when given
    grid_style = f"grid-template-columns:repeat({gx},{cell_px}px);grid-auto-rows:{cell_h}px"
    n0, n1 = (html.escape(n) for n in names)
    markup = f"""<div class="dgmx dgmx-latent" id="{uid}" tabindex="0" data-gx="{gx}" data-gy="{gy}" \
data-xs="{_attr([round(float(v), 4) for v in xs])}" data-ys="{_attr([round(float(v), 4) for v in ys_rows])}" \
data-names="{_attr(list(names))}" data-selected="{selected}">
<style>{_CSS}</style>
<div class="dgmx-title">{html.escape(title)}</div>
<div class="dgmx-body">
<div class="dgmx-plot">
<div class="dgmx-ylab"><span>{y1:g}</span><span class="dgmx-an">{n1}</span><span>{y0:g}</span></div>
<div class="dgmx-map{points_class}" style="width:{gx * cell_px}px;height:{gy * cell_h}px">
<div class="dgmx-grid" style="{grid_style}">{cell_imgs}</div>
{scatter}<div class="dgmx-box dgmx-hov"></div><div class="dgmx-box dgmx-pin"></div>
</div>
<div></div>
<div class="dgmx-xlab"><span>{x0:g}</span><span class="dgmx-an">{n0}</span><span>{x1:g}</span></div>
</div>
<div class="dgmx-side">
{_img(uris[selected], "dgmx-big", (big_w, big_h), "decoded image")}
<div class="dgmx-readout"></div>
{buttons}{legend_html}
<div class="dgmx-help">Hover over the map to decode a latent point, click to keep it, arrow keys move the kept
point. Precomputed decodings: works without a running kernel.{(' ' + html.escape(note)) if note else ''}</div>
</div>
</div>
{_script(uid, _JS_LATENT)}
</div>"""
    return StaticView(markup, uid, n_images=len(cells), kind="latent")


def class_view_html(thumbs: np.ndarray, class_names: list[str], style_names: list[str], *, title: str,
                    thumb_px: int, big_px: int, sources: np.ndarray | None = None, note: str = "",
                    selected: int = 0) -> StaticView:
    """The class-conditional view: one row per style (``thumbs`` uint8 ``(S, C, H, W[, 3])``), one column per
    class, optionally preceded by the source image a style was encoded from; a click on a row shows that style
    decoded for every class, large."""
    n_styles, n_classes = thumbs.shape[:2]
    h, w = thumbs.shape[2:4]
    uid = new_id()
    big = (big_px, round(big_px * h / w))
    small = (thumb_px, round(thumb_px * h / w))
    head_cells = "".join(f'<div style="width:{small[0]}px">{html.escape(n)}</div>' for n in class_names)
    head_src = ""
    if sources is not None:
        head_src = f'<div class="dgmx-gap" style="width:{small[0]}px" title="source image">src</div>'
    rows = [f'<div class="dgmx-row dgmx-head">{head_src}{head_cells}</div>']
    src_uris = [data_uri(png_bytes(s)) for s in sources] if sources is not None else None
    for r in range(n_styles):
        src = _img(src_uris[r], "dgmx-src dgmx-gap", small, "source image") if src_uris else ""
        imgs = "".join(_img(data_uri(png_bytes(thumbs[r, c])), "dgmx-thumb", small, class_names[c])
                       for c in range(n_classes))
        rows.append(f'<div class="dgmx-row" data-row="{r}" data-name="{html.escape(style_names[r], quote=True)}">'
                    f"{src}{imgs}</div>")
    first = thumbs[selected]
    strip_src = ""
    if src_uris:
        strip_src = (f'<figure class="dgmx-gap">{_img(src_uris[selected], "dgmx-bigsrc", big, "source image")}'
                     f"<figcaption>source</figcaption></figure>")
    strip = "".join(f'<figure>{_img(data_uri(png_bytes(first[c])), "dgmx-bigc", big, class_names[c])}'
                    f"<figcaption>{html.escape(class_names[c])}</figcaption></figure>" for c in range(n_classes))
    markup = f"""<div class="dgmx dgmx-classes" id="{uid}" tabindex="0" data-styles="{n_styles}" \
data-classes="{n_classes}" data-selected="{selected}">
<style>{_CSS}</style>
<div class="dgmx-title">{html.escape(title)}</div>
<div class="dgmx-body">
<div class="dgmx-rows">{''.join(rows)}</div>
<div class="dgmx-side">
<div class="dgmx-strip">{strip_src}{strip}</div>
<div class="dgmx-readout"></div>
<div class="dgmx-help">Each row is one style (latent code z) decoded once per class. Hover over a row to preview it,
click to keep it, arrow keys up and down move the kept row. Precomputed: works without a running
kernel.{(' ' + html.escape(note)) if note else ''}</div>
</div>
</div>
{_script(uid, _JS_CLASSES)}
</div>"""
    n_images = n_styles * n_classes + (n_styles if sources is not None else 0)
    return StaticView(markup, uid, n_images=n_images, kind="class-conditional")
