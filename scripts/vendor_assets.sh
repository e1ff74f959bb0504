#!/usr/bin/env bash
# Re-create _vendor/: the JavaScript, CSS and fonts the static book needs so that it works with no network.
#
# Why: by default Sphinx loads MathJax, and myst-nb loads RequireJS and the ipywidgets embed manager, from public CDNs.
# Offline (or behind a strict firewall) formulas then show as raw TeX and widgets stay blank. _config.yml points
# `mathjax_path` and `nb_ipywidgets_js` at the copies made here; `html_static_path: [_vendor]` copies them into
# _build/html/_static/ (we do not use a `_static/` folder: Jupyter Book injects every .js/.css found there into every page).
#
# Usage:  scripts/vendor_assets.sh           (needs npm and access to the npm registry; run from anywhere)
#         scripts/vendor_assets.sh --check   (only verify that the vendored files are present)
#
# Pinned versions: change them here and re-run; the script prints the sha256 of every copied file.
set -euo pipefail

MATHJAX_VERSION="3.2.2"
HTML_MANAGER_VERSION="1.0.15"   # @jupyter-widgets/html-manager for ipywidgets 8.x
REQUIREJS_VERSION="2.3.8"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/_vendor"

# The files the site needs, relative to $DEST (check_site.py and the build fail if one is missing).
REQUIRED=(
  "mathjax/es5/tex-mml-chtml.js"
  "mathjax/es5/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff"
  "mathjax/es5/input/tex/extensions/boldsymbol.js"
  "jupyter-widgets/embed-amd.js"
  "requirejs/require.js"
  "offline/widgets-offline.js"
)

check() {
  local missing=0
  for f in "${REQUIRED[@]}"; do
    if [[ ! -s "$DEST/$f" ]]; then echo "missing: _vendor/$f" >&2; missing=1; fi
  done
  if [[ $missing -ne 0 ]]; then
    echo "Run scripts/vendor_assets.sh (needs npm) to re-create _vendor/." >&2
    return 1
  fi
  echo "_vendor/ is complete ($(du -sh "$DEST" | cut -f1))."
}

if [[ "${1:-}" == "--check" ]]; then
  check
  exit $?
fi

command -v npm >/dev/null || { echo "npm not found: install Node.js (https://nodejs.org) or your distribution's npm package" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK" "$DEST.new"' EXIT
cd "$WORK"
npm pack --silent "mathjax@${MATHJAX_VERSION}" "@jupyter-widgets/html-manager@${HTML_MANAGER_VERSION}" \
  "requirejs@${REQUIREJS_VERSION}" >/dev/null
for pkg in mathjax requirejs jupyter-widgets-html-manager; do
  mkdir -p "$pkg"
  tar -xzf "$pkg"-*.tgz -C "$pkg"
done

# Build the new tree next to the old one and swap it in at the end, so a failed run leaves _vendor/ intact.
NEW="$DEST.new"
rm -rf "$NEW"
mkdir -p "$NEW/mathjax/es5/output/chtml/fonts" "$NEW/mathjax/es5/input/tex" "$NEW/jupyter-widgets" "$NEW/requirejs"

# MathJax 3: the combined TeX+MathML -> CommonHTML component, its woff-v2 fonts (the only format modern browsers need)
# and the TeX extensions it autoloads on demand (\boldsymbol, \cancel, \color, ...). MathJax finds them relative to
# the script's own URL, so the es5/ layout is kept.
MJ="mathjax/package"
cp "$MJ/es5/tex-mml-chtml.js" "$NEW/mathjax/es5/"
cp -r "$MJ/es5/output/chtml/fonts/woff-v2" "$NEW/mathjax/es5/output/chtml/fonts/"
cp -r "$MJ/es5/input/tex/extensions" "$NEW/mathjax/es5/input/tex/"
cp "$MJ/LICENSE" "$NEW/mathjax/LICENSE"

# ipywidgets 8 embed manager (AMD build, loaded through RequireJS). Its Font Awesome icons are resolved relative to
# embed-amd.js; Chromium, Firefox and Safari pick the woff2 files, so the eot/ttf/svg/woff copies are left out.
HM="jupyter-widgets-html-manager/package"
cp "$HM/dist/embed-amd.js" "$NEW/jupyter-widgets/"
cp "$HM"/dist/*.woff2 "$NEW/jupyter-widgets/"
cp "$HM/package.json" "$NEW/jupyter-widgets/package.json"   # carries the licence (BSD-3-Clause); no LICENSE file
cp "$HM/dist/embed.js.LICENSE.txt" "$NEW/jupyter-widgets/THIRD-PARTY-LICENSES.txt"

cp requirejs/package/require.js "$NEW/requirejs/"

cat > "$NEW/README.md" <<EOF
# Vendored front-end assets (do not edit by hand)

Created by \`scripts/vendor_assets.sh\` from the npm registry with \`npm pack\`:

| package | version | files |
|---|---|---|
| mathjax | ${MATHJAX_VERSION} | es5/tex-mml-chtml.js, es5/output/chtml/fonts/woff-v2/, es5/input/tex/extensions/ |
| @jupyter-widgets/html-manager | ${HTML_MANAGER_VERSION} | dist/embed-amd.js, dist/*.woff2 (Font Awesome) |
| requirejs | ${REQUIREJS_VERSION} | require.js |

Licences: MathJax, Apache-2.0 (\`mathjax/LICENSE\`); @jupyter-widgets/html-manager, BSD-3-Clause (\`jupyter-widgets/package.json\`,
bundled third-party notices in \`jupyter-widgets/THIRD-PARTY-LICENSES.txt\`); RequireJS, MIT (header of \`requirejs/require.js\`).

\`offline/widgets-offline.js\` is ours (not from npm; the script keeps it): it points the widget manager at its fonts
in \`_static/jupyter-widgets/\` and forwards its MathJax 2 calls to MathJax 3.

\`_config.yml\` serves this folder through \`html_static_path\`, so in the built site these files live under \`_static/\`.
EOF

# Keep our own files (_vendor/offline/: not from npm), replace the rest.
if [[ -d "$DEST/offline" ]]; then cp -r "$DEST/offline" "$NEW/offline"; fi
rm -rf "$DEST.old"
if [[ -d "$DEST" ]]; then mv "$DEST" "$DEST.old"; fi
mv "$NEW" "$DEST"
rm -rf "$DEST.old"

(cd "$DEST" && find . -type f ! -name README.md -print0 | sort -z | xargs -0 sha256sum)
check
