/*
 * dfa-book: shrink a display equation that is wider than the text column until it fits, down
 * to MIN_SCALE of the size MathJax gave it; one that still does not fit scrolls (dfa-book.css).
 * MathJax draws display math at about 1.27 times the text's size, so the floor of 0.55 is
 * still about 70 % of the text: smaller, but whole, where a cut-off equation hides its end.  Runs once MathJax has typeset the page and again when the window changes
 * size, then marks <html data-equations-fitted> so that the browser test knows it is done.
 */
(function () {
  "use strict";
  var MIN_SCALE = 0.55;

  function fitEquation(eq) {
    if (eq.dataset.mathjaxSize === undefined) eq.dataset.mathjaxSize = eq.style.fontSize || "100%";
    eq.style.fontSize = eq.dataset.mathjaxSize;
    var scale = 1;
    // Width follows the font size almost exactly (MathJax sizes in em): one or two rounds fit.
    for (var round = 0; round < 3 && scale > MIN_SCALE && eq.scrollWidth > eq.clientWidth + 1; round++) {
      scale = Math.max(MIN_SCALE, scale * (eq.clientWidth / eq.scrollWidth) * 0.98);
      eq.style.fontSize = "calc(" + eq.dataset.mathjaxSize + " * " + scale.toFixed(3) + ")";
    }
  }

  function fitAll() {
    document.querySelectorAll('mjx-container[display="true"]').forEach(fitEquation);
    document.documentElement.dataset.equationsFitted = "true";
  }

  window.addEventListener("load", function () {
    var mj = window.MathJax;
    var typeset = mj && mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
    typeset.then(fitAll, fitAll);
    var pending;
    window.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(fitAll, 150);
    });
  });
})();
