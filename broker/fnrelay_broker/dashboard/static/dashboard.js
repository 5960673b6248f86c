// Between two refreshes of the endpoint list, mark an online endpoint offline at the moment
// the broker's own rule will (its last heartbeat older than the heartbeat threshold): the
// broker sends how many seconds are left ("data-offline-in"), counted here from the
// fragment's arrival, so no clock needs to agree with the broker's. The next refresh
// replaces the row with the broker's word either way.
(function () {
  "use strict";
  function stamp(root) {
    root.querySelectorAll("[data-offline-in]").forEach(function (el) {
      el.dataset.offlineAt = String(performance.now() + parseFloat(el.dataset.offlineIn) * 1000);
    });
  }
  document.addEventListener("DOMContentLoaded", function () { stamp(document); });
  document.addEventListener("htmx:afterSwap", function (e) { stamp(e.target); });
  setInterval(function () {
    var now = performance.now();
    document.querySelectorAll("[data-offline-at]").forEach(function (el) {
      if (now >= parseFloat(el.dataset.offlineAt)) {
        el.removeAttribute("data-offline-at");
        el.textContent = "offline";
        el.className = "state state-offline";
      }
    });
  }, 100);
})();
