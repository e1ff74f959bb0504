/*
^ * dgmlab: make the vendored ipywidgets embed manager (html-manager 1.x, ipywidgets 8) work from _static/ offline.
 * Loaded by myst-nb (nb_ipywidgets_js in _config.yml) after require.js and before embed-amd.js, on pages that embed
 * widget state only. Written for this project, not part of any npm package.
 *
 * 1. Assets. The widget bundles locate their Font Awesome files relative to their RequireJS module URLs, which
 *    default to the page's own folder (e.g. book/@jupyter-widgets/...). Point the modules, and the embed manager's
 *    asset path, at the folder of embed-amd.js instead.
 * 2. MathJax. The embed manager typesets widget labels through the MathJax 2 API (MathJax.Hub.Queue); the book uses
 *    MathJax 3, where that call throws. Forward it to MathJax 3's typesetPromise.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  var assets = new URL("../jupyter-widgets/", script ? script.src : window.location.href).href;

  window.__jupyter_widgets_assets_path__ = assets;
  if (window.requirejs && window.requirejs.config) {
    var paths = {};
    ["base", "base7", "controls", "controls7", "html-manager"].forEach(function (name) {
      paths["@jupyter-widgets/" + name] = assets + name;
    });
    paths["@jupyter-widgets/html-manager/dist/libembed-amd"] = assets + "libembed-amd";
    window.requirejs.config({ paths: paths });
  }

  function installMathJax2Queue() {
    var mj = window.MathJax;
    if (!mj || mj.Hub || !mj.version || mj.version.charAt(0) !== "3") {
      return;
    }
    mj.Hub = {
      Queue: function () {
        Array.prototype.forEach.call(arguments, function (cmd) {
          if (!Array.isArray(cmd) || cmd[0] !== "Typeset") {
            return;
          }
          var target = cmd[2] ? [cmd[2]] : undefined;
          var ready = mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
          ready
            .then(function () { return mj.typesetPromise ? mj.typesetPromise(target) : null; })
            .catch(function (err) { console.warn("dgmlab: MathJax could not typeset a widget label", err); });
        });
      },
    };
  }
  // MathJax 3 is loaded with `defer`, so it exists by DOMContentLoaded; widgets render later, on `load`.
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", installMathJax2Queue);
  } else {
    installMathJax2Queue();
  }
})();
