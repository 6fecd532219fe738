/* django-modelslab admin: while a request is queued or processing, poll its status and
 * refresh the page when it finishes. No build step, no dependencies. */
(function () {
  "use strict";

  var ACTIVE = ["queued", "processing"];
  var MAX_PAUSE = 30000;

  function badges() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-modelslab-status]"));
  }

  function isActive(badge) {
    return ACTIVE.indexOf(badge.getAttribute("data-modelslab-status")) !== -1;
  }

  var dirty = false;
  document.addEventListener("input", function () { dirty = true; });

  function update(badge, item) {
    badge.setAttribute("data-modelslab-status", item.status);
    badge.className = "modelslab-status modelslab-status--" + item.status;
    badge.querySelector(".modelslab-status__label").textContent = item.label;
    var eta = document.querySelector('[data-modelslab-eta-for="' + item.id + '"]');
    if (eta) {
      eta.textContent = item.eta_label;
    }
  }

  function finished(badge) {
    if (!dirty) {
      window.location.reload();
      return;
    }
    // Unsaved edits on the page: do not throw them away, say what happened instead.
    if (document.getElementById("modelslab-finished")) { return; }
    var note = document.createElement("p");
    note.id = "modelslab-finished";
    note.className = "modelslab-finished";
    note.textContent = badge.getAttribute("data-modelslab-finished");
    var main = document.getElementById("content-main") || document.body;
    main.insertBefore(note, main.firstChild);
  }

  function poll(pause) {
    var waiting = badges().filter(isActive);
    if (!waiting.length) { return; }
    var url = waiting[0].getAttribute("data-modelslab-url");
    var query = waiting.map(function (badge) {
      return "id=" + encodeURIComponent(badge.getAttribute("data-modelslab-id"));
    }).join("&");
    window.fetch(url + "?" + query, {
      credentials: "same-origin",
      headers: {"Accept": "application/json"}
    }).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json();
    }).then(function (data) {
      var done = null;
      data.requests.forEach(function (item) {
        badges().forEach(function (badge) {
          if (badge.getAttribute("data-modelslab-id") !== String(item.id)) { return; }
          if (isActive(badge) && !item.active) { done = badge; }
          update(badge, item);
        });
      });
      if (done) { finished(done); }
      schedule(pause);
    }).catch(function () {
      schedule(Math.min(pause * 2, MAX_PAUSE));  // back off while the server is unhappy
    });
  }

  function schedule(pause) {
    window.setTimeout(function () { poll(pause); }, pause);
  }

  function start() {
    var first = badges().filter(isActive)[0];
    if (!first) { return; }
    var seconds = parseFloat(first.getAttribute("data-modelslab-poll"));
    schedule(seconds > 0 ? seconds * 1000 : 2000);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
}());
