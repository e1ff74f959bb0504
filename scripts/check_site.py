#!/usr/bin/env python3
"""Check the built book in a real browser, with no network: math rendered, widgets rendered, nothing fetched from afar.

The site (``_build/html`` by default) is served on 127.0.0.1 from a thread; headless Chromium loads each page with
``--dump-dom`` after a virtual-time budget, and the script then checks the rendered DOM:

* math: every page whose HTML has Sphinx math gets MathJax ``<mjx-container>`` elements, no raw TeX left in the math
  elements, and no ``<mjx-merror>`` (a TeX error such as an undefined macro);
* widgets (``--expect-widgets``, or automatically with ``--all`` for pages that embed widget state): every embedded
  ipywidgets view was rendered by the vendored html-manager;
* ``--expect-text`` / ``--expect-selector``: given text or elements are present;
* network: every request the page made to our server succeeded (no missing vendored file), and nothing tried to reach
  another host. Chromium is pointed at a recording proxy on 127.0.0.1, so any request to an outside host (a CDN, a
  font service, analytics) is caught and refused instead of leaving the machine;
* JavaScript: no uncaught errors or console errors (``--allow-js-errors`` to relax).

Exit status: 0 when every check passed, 1 when a check failed (each failure is printed with what to fix), 2 when
the check could not run (no site, no Chromium).

Examples::

    python scripts/check_site.py                                # book/intro.html of _build/html
    python scripts/check_site.py --page book/intro.html --screenshot intro.png
    python scripts/check_site.py --page book/widgets.html --expect-widgets --expect-selector .widget-slider
    python scripts/check_site.py --all                          # every page, expectations read from each page

Chromium: the Debian/Ubuntu package ``chromium`` (``apt-get install chromium``); another binary can be given with
``--chromium`` or the ``CHROMIUM`` environment variable.
"""

from __future__ import annotations

import argparse
import functools
import html.parser
import http.server
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
WIDGET_STATE_TYPE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW_TYPE = "application/vnd.jupyter.widget-view+json"
# Requests a browser makes on its own, whatever the page says.
IGNORED_LOCAL_MISSES = {"/favicon.ico"}
# Chromium's own service endpoints: the browser calls them whatever the page does (sign-in, component updater,
# network time), even with the flags below. They are refused like everything else, but are not the page's doing.
BROWSER_SERVICE_HOSTS = {
    "accounts.google.com", "clients1.google.com", "clients2.google.com", "update.googleapis.com",
    "safebrowsing.googleapis.com", "optimizationguide-pa.googleapis.com", "content-autofill.googleapis.com",
    "redirector.gvt1.com", "edgedl.me.gvt1.com", "android.clients.google.com",
    # Chromium 150 also connects here from a page holding nothing but "<html><body>hi</body></html>" (measured).
    "www.google.com",
}
# Pages that are not book content.
SKIPPED_DIRS = {"_static", "_sources", "_images", "_downloads"}


# --------------------------------------------------------------------------------------------------------- servers


class _Recorder:
    """Thread-safe list of (method, target, status) seen by one of our servers."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[tuple[str, str, int]] = []

    def add(self, method: str, target: str, status: int) -> None:
        with self._lock:
            self.entries.append((method, target, status))

    def take(self) -> list[tuple[str, str, int]]:
        with self._lock:
            out, self.entries = self.entries, []
        return out


class _SiteHandler(http.server.SimpleHTTPRequestHandler):
    recorder: _Recorder

    def log_request(self, code="-", size="-") -> None:  # record instead of printing to stderr
        self.recorder.add(self.command, self.path, int(code) if str(code).isdigit() else 0)

    def log_message(self, format, *args) -> None:  # noqa: A002 - signature fixed by the base class
        pass


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    """Stands in for the outside world: records every request Chromium routes to it and refuses it."""

    recorder: _Recorder

    def _refuse(self) -> None:
        self.recorder.add(self.command, self.path, 403)
        self.send_response(403, "dgmlab check_site: no network")
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    do_CONNECT = do_GET = do_POST = do_HEAD = do_PUT = do_OPTIONS = _refuse

    def log_message(self, format, *args) -> None:  # noqa: A002
        pass


def _start_server(handler_cls, recorder: _Recorder, **handler_kwargs) -> http.server.ThreadingHTTPServer:
    handler = type(handler_cls.__name__, (handler_cls,), {"recorder": recorder})
    if handler_kwargs:
        handler = functools.partial(handler, **handler_kwargs)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name=handler_cls.__name__, daemon=True).start()
    return server


# ------------------------------------------------------------------------------------------------------------- DOM


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


@dataclass
class Dom:
    elements: list[Element] = field(default_factory=list)
    text: str = ""
    unrendered_math: list[str] = field(default_factory=list)


class _DomParser(html.parser.HTMLParser):
    """Collects elements and visible text, and TeX left inside Sphinx math elements (outside MathJax output)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.dom = Dom()
        self._stack: list[Element] = []
        self._text: list[str] = []
        self._math_open: list[list[str]] = []  # text buffers of open math elements

    def _in(self, predicate) -> bool:
        return any(predicate(e) for e in self._stack)

    def handle_starttag(self, tag, attrs):
        el = Element(tag, {k: (v or "") for k, v in attrs})
        self.dom.elements.append(el)
        if tag in self.VOID:
            return
        self._stack.append(el)
        if "math" in el.classes and tag in {"span", "div"}:
            self._math_open.append([])

    def handle_startendtag(self, tag, attrs):
        self.dom.elements.append(Element(tag, {k: (v or "") for k, v in attrs}))

    def handle_endtag(self, tag):
        # Pop to the matching tag (tolerates the odd unclosed element in real HTML).
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i].tag == tag:
                for el in self._stack[i:]:
                    if "math" in el.classes and el.tag in {"span", "div"} and self._math_open:
                        leftover = "".join(self._math_open.pop()).strip()
                        if re.search(r"\\[(\[]|\$\$|\\begin|\\frac|\\mathbf", leftover):
                            self.dom.unrendered_math.append(leftover[:80])
                del self._stack[i:]
                break

    def handle_data(self, data):
        if self._in(lambda e: e.tag in {"script", "style"}):
            return
        self._text.append(data)
        if self._math_open and not self._in(lambda e: e.tag.startswith("mjx-")):
            self._math_open[-1].append(data)

    def close(self):
        super().close()
        self.dom.text = " ".join(" ".join(self._text).split())


def parse_dom(markup: str) -> Dom:
    parser = _DomParser()
    parser.feed(markup)
    parser.close()
    return parser.dom


def select(dom: Dom, selector: str) -> list[Element]:
    """Elements matching a simple selector: ``tag``, ``#id``, ``.class``, or a combination like ``div.a.b#x``."""
    m = re.fullmatch(r"([a-zA-Z][\w-]*)?((?:[#.][\w-]+)*)", selector.strip())
    if not m:
        raise ValueError(f"unsupported selector {selector!r}: use tag, #id, .class or e.g. div.widget-slider")
    tag, rest = m.group(1), m.group(2)
    ids = re.findall(r"#([\w-]+)", rest)
    classes = set(re.findall(r"\.([\w-]+)", rest))
    return [
        e
        for e in dom.elements
        if (tag is None or e.tag == tag.lower())
        and all(e.attrs.get("id") == i for i in ids)
        and classes <= e.classes
    ]


# --------------------------------------------------------------------------------------------------------- browser


def find_chromium(explicit: str | None) -> str:
    for name in ([explicit] if explicit else []) + [os.environ.get("CHROMIUM", "")] + list(CHROMIUM_NAMES):
        if name and (path := shutil.which(name)):
            return path
    raise FileNotFoundError(
        "no Chromium found: install it (Debian/Ubuntu: `apt-get install chromium`) or pass --chromium PATH"
    )


def run_chromium(
    chromium: str, url: str, proxy_port: int, budget_ms: int, window: str, extra: list[str], timeout_s: float
) -> subprocess.CompletedProcess:
    profile = tempfile.mkdtemp(prefix="dgmlab-chromium-")
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-field-trial-config",
        "--disable-breakpad",
        "--password-store=basic",
        "--use-mock-keychain",
        "--disable-search-engine-choice-screen",
        "--disable-component-extensions-with-background-pages",
        "--disable-features=NetworkTimeServiceQuerying,Translate,OptimizationHints,MediaRouter,"
        "DialMediaRouteProvider,AcceptCHFrame,InterestFeedContentSuggestions,AutofillServerCommunication",
        "--no-pings",
        "--no-first-run",
        "--no-default-browser-check",
        "--metrics-recording-only",
        "--mute-audio",
        "--hide-scrollbars",
        # Everything not on 127.0.0.1 goes to our refusing, recording proxy (Chromium never proxies loopback).
        f"--proxy-server=http://127.0.0.1:{proxy_port}",
        "--enable-logging=stderr",
        "--v=0",
        f"--user-data-dir={profile}",
        f"--window-size={window}",
        f"--virtual-time-budget={budget_ms}",
        *extra,
        url,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # Chromium's helper processes share the session we started
        out, err = proc.communicate()
        err += f"\n[check_site] Chromium was stopped after {timeout_s:.0f} s"
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def request_host(target: str) -> str:
    """Host of a proxied request: ``host:443`` for CONNECT, an absolute URL otherwise."""
    if "://" in target:
        return urllib.parse.urlsplit(target).hostname or ""
    return target.rsplit(":", 1)[0]


CONSOLE_RE = re.compile(r":(INFO|WARNING|ERROR):CONSOLE[^\]]*\]\s*\"(.*)\", source: (\S*)", re.S)


def console_messages(stderr: str) -> list[tuple[str, str, str]]:
    """(level, message, source) for every console message Chromium logged."""
    out = []
    for line in stderr.splitlines():
        m = CONSOLE_RE.search(line)
        if m:
            out.append((m.group(1), m.group(2), m.group(3)))
    return out


# ---------------------------------------------------------------------------------------------------------- checks


@dataclass
class PageExpectations:
    math: bool | None = None  # None: decide from the page's HTML
    widgets: bool | None = None
    texts: list[str] = field(default_factory=list)
    selectors: list[str] = field(default_factory=list)
    allow_js_errors: bool = False


def static_facts(source: str) -> dict[str, int]:
    """What the built HTML asks for, before any JavaScript runs."""
    src = parse_dom(source)
    math = [e for e in src.elements if e.tag in {"span", "div"} and "math" in e.classes]
    views = [e for e in src.elements if e.tag == "script" and e.attrs.get("type") == WIDGET_VIEW_TYPE]
    state = [e for e in src.elements if e.tag == "script" and e.attrs.get("type") == WIDGET_STATE_TYPE]
    return {"math": len(math), "widget_views": len(views), "widget_state": len(state)}


def check_page(
    site: Path, page: str, base_url: str, site_rec: _Recorder, proxy_rec: _Recorder, chromium: str,
    want: PageExpectations, args: argparse.Namespace,
) -> list[str]:
    """Load one page and return a list of problems (empty when all is well); prints a one-line summary."""
    path = site / page
    if not path.is_file():
        return [f"{page}: no such page in {site} (build the book first, or check --page)"]
    facts = static_facts(path.read_text(encoding="utf-8", errors="replace"))
    url = f"{base_url}/{page}"
    site_rec.take(), proxy_rec.take()

    proc = run_chromium(chromium, url, args.proxy_port, args.budget_ms, args.window, ["--dump-dom"], args.timeout)
    problems: list[str] = []
    if not proc.stdout.strip():
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        return [f"{page}: Chromium returned no DOM (exit {proc.returncode}); last lines of its log:\n{tail}"]
    dom = parse_dom(proc.stdout)

    # (a) math
    expect_math = want.math if want.math is not None else facts["math"] > 0
    containers = select(dom, "mjx-container")
    if expect_math:
        if not containers:
            problems.append(
                f"{page}: MathJax did not render ({facts['math']} math elements in the HTML, no <mjx-container> "
                "after loading). Check that _static/mathjax/es5/tex-mml-chtml.js is served (mathjax_path in "
                "_config.yml, _vendor/ via html_static_path; scripts/vendor_assets.sh --check)."
            )
        elif len(containers) < facts["math"]:
            problems.append(
                f"{page}: only {len(containers)} of {facts['math']} math elements were rendered by MathJax "
                "(raise --budget-ms if the page is very long)."
            )
    for tex in dom.unrendered_math:
        problems.append(f"{page}: math left as raw TeX: {tex!r}")
    for err in select(dom, "mjx-merror"):
        msg = err.attrs.get("data-mjx-error") or err.attrs.get("title") or "see the page"
        problems.append(f"{page}: MathJax reports a TeX error: {msg}")

    # (b) widgets
    expect_widgets = want.widgets if want.widgets is not None else facts["widget_state"] > 0
    rendered_views = [e for e in select(dom, "div.widget-subarea")]
    widget_elements = [e for e in dom.elements if any(c.startswith("widget-") or c == "jupyter-widgets" for c in e.classes)]
    if expect_widgets:
        if facts["widget_views"] == 0:
            problems.append(
                f"{page}: widgets expected but the page embeds no widget view; was the notebook executed with "
                "widget state saved (execute_notebooks: force)?"
            )
        elif len(rendered_views) < facts["widget_views"] or not widget_elements:
            problems.append(
                f"{page}: {facts['widget_views']} widget views embedded but {len(rendered_views)} rendered. Check that "
                "_static/requirejs/require.js and _static/jupyter-widgets/embed-amd.js are served (nb_ipywidgets_js "
                "in _config.yml)."
            )
    for err in select(dom, ".jupyter-widgets-error-widget") + select(dom, ".widget-error"):
        problems.append(f"{page}: a widget failed to render: {err.attrs.get('title', '')!r}")

    # (c) required text and elements
    for text in want.texts:
        if text not in dom.text:
            problems.append(f"{page}: text {text!r} not found in the rendered page")
    for sel in want.selectors:
        if not select(dom, sel):
            problems.append(f"{page}: no element matches {sel!r} in the rendered page")

    # (d) network
    local = site_rec.take()
    missing = sorted({(t, s) for _, t, s in local if s >= 400 and t.split("?")[0] not in IGNORED_LOCAL_MISSES})
    for target, status in missing:
        problems.append(f"{page}: the page requested {target} and the site answered HTTP {status} (missing file?)")
    external = sorted({t for _, t, _ in proxy_rec.take() if request_host(t) not in BROWSER_SERVICE_HOSTS})
    for target in external:
        problems.append(
            f"{page}: the page tried to reach an outside host: {target} (vendor the file into _vendor/ or disable "
            "the feature; the static site must work offline)"
        )

    # (e) JavaScript
    messages = console_messages(proc.stderr)
    js_errors = [(m, s) for lvl, m, s in messages if lvl == "ERROR" or m.startswith("Uncaught")]
    if not want.allow_js_errors:
        for msg, src in js_errors:
            problems.append(f"{page}: JavaScript error: {msg} ({src})")

    # screenshot (a second load: --dump-dom and --screenshot do not combine)
    if args.screenshot and not args.all:
        shot = Path(args.screenshot).resolve()
        shot.parent.mkdir(parents=True, exist_ok=True)
        run_chromium(
            chromium, url, args.proxy_port, args.budget_ms, args.window, [f"--screenshot={shot}"], args.timeout
        )
        site_rec.take(), proxy_rec.take()
        if not shot.is_file():
            problems.append(f"{page}: Chromium did not write the screenshot {shot}")
        else:
            print(f"screenshot: {shot}")

    status = "FAIL" if problems else "ok"
    print(
        f"{status:4} {page}: {len(containers)}/{facts['math']} math rendered, "
        f"{len(rendered_views)}/{facts['widget_views']} widget views rendered, {len(local)} local requests, "
        f"{len(external)} outside requests, {len(js_errors)} JS errors",
        flush=True,
    )
    return problems


def all_pages(site: Path) -> list[str]:
    pages = []
    for p in sorted(site.rglob("*.html")):
        rel = p.relative_to(site)
        if rel.parts[0] in SKIPPED_DIRS:
            continue
        if 'http-equiv="refresh"' in p.read_text(encoding="utf-8", errors="replace")[:2000].lower():
            continue  # the redirect index.html written by sphinx-external-toc
        pages.append(rel.as_posix())
    return pages


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="See the module docstring for details.")
    ap.add_argument("--site", default=str(REPO_ROOT / "_build" / "html"), help="built HTML folder (default: %(default)s)")
    ap.add_argument("--page", action="append", help="page to check, relative to --site (repeatable; default book/intro.html)")
    ap.add_argument("--all", action="store_true", help="check every page; expect math/widgets where the HTML has them")
    ap.add_argument("--expect-math", dest="math", action="store_true", default=None, help="require rendered math")
    ap.add_argument("--no-math", dest="math", action="store_false", help="do not require rendered math")
    ap.add_argument("--expect-widgets", dest="widgets", action="store_true", default=None,
                    help="require every embedded ipywidgets view to render")
    ap.add_argument("--expect-text", action="append", default=[], metavar="TEXT",
                    help="text that must appear in the rendered page (repeatable)")
    ap.add_argument("--expect-selector", action="append", default=[], metavar="SEL",
                    help="element that must exist: tag, #id, .class or a combination like div.widget-slider (repeatable)")
    ap.add_argument("--allow-js-errors", action="store_true", help="report JavaScript errors but do not fail on them")
    ap.add_argument("--screenshot", metavar="PNG", help="also save a screenshot of the (single) page")
    ap.add_argument("--window", default="1280,2000", help="browser window size W,H (default: %(default)s)")
    ap.add_argument("--budget-ms", type=int, default=15000, help="virtual time given to the page (default: %(default)s)")
    ap.add_argument("--timeout", type=float, default=90, help="wall-clock seconds per browser run (default: %(default)s)")
    ap.add_argument("--chromium", help="Chromium binary (default: $CHROMIUM, then chromium, google-chrome, ...)")
    args = ap.parse_args(argv)

    site = Path(args.site).resolve()
    if not (site / "_static").is_dir():
        print(f"check_site: {site} is not a built site (no _static/); run `jupyter-book build .` first", file=sys.stderr)
        return 2
    try:
        chromium = find_chromium(args.chromium)
    except FileNotFoundError as exc:
        print(f"check_site: {exc}", file=sys.stderr)
        return 2
    if args.all and (args.page or args.screenshot or args.expect_text or args.expect_selector):
        print("check_site: --all checks every page by what it contains; do not combine it with --page, "
              "--screenshot, --expect-text or --expect-selector", file=sys.stderr)
        return 2
    pages = all_pages(site) if args.all else (args.page or ["book/intro.html"])
    if args.screenshot and len(pages) != 1:
        print("check_site: --screenshot needs exactly one --page", file=sys.stderr)
        return 2

    site_rec, proxy_rec = _Recorder(), _Recorder()
    site_server = _start_server(_SiteHandler, site_rec, directory=str(site))
    proxy_server = _start_server(_ProxyHandler, proxy_rec)
    args.proxy_port = proxy_server.server_address[1]
    base_url = f"http://127.0.0.1:{site_server.server_address[1]}"
    want = PageExpectations(
        math=args.math, widgets=args.widgets, texts=args.expect_text, selectors=args.expect_selector,
        allow_js_errors=args.allow_js_errors,
    )
    problems: list[str] = []
    try:
        for page in pages:
            problems += check_page(site, page.lstrip("/"), base_url, site_rec, proxy_rec, chromium, want, args)
    finally:
        site_server.shutdown()
        proxy_server.shutdown()

    if problems:
        print(f"\n{len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        return 1
    print(f"all {len(pages)} page(s) passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
