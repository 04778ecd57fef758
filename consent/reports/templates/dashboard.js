// The business selector: shows one view (all businesses, or one business) and hides the others.
// The choice is kept in the address (#business=NAME), so a view can be bookmarked or linked.
(function () {
  var select = document.getElementById("business");
  var views = Array.prototype.slice.call(document.querySelectorAll(".view"));
  function chosen() {
    var match = /(?:^#|&)business=([^&]*)/.exec(window.location.hash);
    var key = match ? decodeURIComponent(match[1]) : "";
    return views.some(function (v) { return v.dataset.business === key; }) ? key : "";
  }
  function show(key) {
    views.forEach(function (view) {
      var on = view.dataset.business === key;
      view.hidden = !on;
      // charts drawn while hidden have no width: size them to the page once shown
      if (on && window.Plotly) {
        view.querySelectorAll(".js-plotly-plot").forEach(function (plot) { window.Plotly.Plots.resize(plot); });
      }
    });
    if (select) { select.value = key; }
  }
  if (select) {
    select.addEventListener("change", function () { window.location.hash = "business=" + encodeURIComponent(select.value); });
  }
  window.addEventListener("hashchange", function () { show(chosen()); });
  show(chosen());
})();
