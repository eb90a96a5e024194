// The layout check of `cargo xtask test` (xtask/src/browser.rs). Inert on
// a normal visit: it runs only when the page is opened with `?layout-check`,
// as headless Chromium opens it, and then writes what it found into one
// element, which `chromium --dump-dom` hands back to the test:
//   a `pre` block wider than its column (the reader would have to scroll
//   sideways), and an image that did not load.
(function () {
  if (!window.location.search.includes("layout-check")) {
    return;
  }
  window.addEventListener("load", function () {
    var problems = [];
    // mdBook scrolls a code block inside its `code` element; a plain `pre`
    // scrolls itself. Either is too wide when its content is wider than it.
    document.querySelectorAll("main pre, main pre > code").forEach(function (block) {
      if (block.scrollWidth > block.clientWidth + 1) {
        var first = (block.textContent || "").trim().split("\n")[0].slice(0, 60);
        problems.push("wide pre (" + block.scrollWidth + " px in " + block.clientWidth + " px): " + first);
      }
    });
    document.querySelectorAll("main img").forEach(function (img) {
      if (!img.complete || img.naturalWidth === 0) {
        problems.push("broken image: " + img.getAttribute("src"));
      }
    });
    var result = document.createElement("pre");
    result.id = "layout-check-result";
    result.textContent = JSON.stringify({ checked: true, problems: problems });
    document.body.appendChild(result);
  });
})();
