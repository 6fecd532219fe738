/* django-modelslab admin: follow generation requests live. No build step, no dependencies.
 *
 * - A form is sent once: its buttons are disabled while the post is in flight (a double
 *   click does not post twice). Pressing Generate / Regenerate shows how long it has been
 *   working and, while the server generates inline, the status of the requests concerned.
 * - While a request shown on the page is queued or processing, its status is polled; when
 *   it finishes, the page's read-only parts (the status, images, error, models tried; the
 *   row in the list) are fetched again and swapped in, without a reload: what the editor
 *   typed stays. Without JavaScript the admin works as before (reload to see news). */
(function () {
  "use strict";

  var ACTIVE = ["queued", "processing"];
  var MAX_PAUSE = 30000;
  var GENERATE_BUTTONS = ["_generate", "_regenerate"];
  var GENERATE_ACTIONS = ["generate", "regenerate"];

  var dirty = false;
  var submitting = false;
  var watched = [];  // ids followed while a post is in flight (an inline run, say)
  var polling = false;
  var pause = 2000;

  document.addEventListener("input", function () { dirty = true; });

  function all(selector, root) {
    return Array.prototype.slice.call((root || document).querySelectorAll(selector));
  }

  function badges() {
    return all("[data-modelslab-status]");
  }

  function idOf(badge) {
    return badge.getAttribute("data-modelslab-id");
  }

  function isActive(badge) {
    return ACTIVE.indexOf(badge.getAttribute("data-modelslab-status")) !== -1;
  }

  function update(badge, item) {
    badge.setAttribute("data-modelslab-status", item.status);
    badge.className = "modelslab-status modelslab-status--" + item.status;
    badge.querySelector(".modelslab-status__label").textContent = item.label;
    all('[data-modelslab-eta-for="' + item.id + '"]').forEach(function (eta) {
      eta.textContent = item.eta_label;
    });
  }

  // --- swapping in what changed -----------------------------------------------------

  function replace(mine, theirs) {
    if (mine && theirs) {
      mine.replaceWith(document.importNode(theirs, true));
    }
  }

  function fieldClass(element) {
    return Array.prototype.filter.call(element.classList, function (name) {
      return name.indexOf("field-") === 0;
    })[0];
  }

  function swapChangePage(doc) {
    replace(document.querySelector(".modelslab-panel"), doc.querySelector(".modelslab-panel"));
    replace(document.getElementById("images-group"), doc.getElementById("images-group"));
    // Read-only rows only: a row with an input keeps what the editor typed.
    all("fieldset.module .form-row").forEach(function (row) {
      var name = fieldClass(row);
      if (!name || !row.querySelector(".readonly") || row.querySelector("input, select, textarea")) {
        return;
      }
      replace(row, doc.querySelector("fieldset.module .form-row." + name));
    });
  }

  function rowOf(doc, id) {
    var badge = doc.querySelector('.modelslab-status[data-modelslab-id="' + id + '"]');
    return badge ? badge.closest("tr") : null;
  }

  function swapRows(doc, ids) {
    ids.forEach(function (id) {
      var mine = rowOf(document, id);
      var theirs = rowOf(doc, id);
      if (!mine || !theirs) { return; }
      all("td, th", theirs).forEach(function (cell) {
        var name = fieldClass(cell);  // the checkbox cell has none: the selection stays
        if (name) { replace(mine.querySelector(":scope > ." + name), cell); }
      });
    });
  }

  function refresh(ids) {
    return window.fetch(window.location.href, {
      credentials: "same-origin",
      headers: {"Accept": "text/html"}
    }).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.text();
    }).then(function (text) {
      var doc = new window.DOMParser().parseFromString(text, "text/html");
      if (document.querySelector(".modelslab-panel")) {
        swapChangePage(doc);
      } else {
        swapRows(doc, ids);
      }
    });
  }

  function cannotRefresh(badge) {
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

  // --- polling ------------------------------------------------------------------------

  function followed() {
    var ids = badges().filter(isActive).map(idOf);
    watched.forEach(function (id) {
      if (ids.indexOf(id) === -1) { ids.push(id); }
    });
    return ids;
  }

  function poll() {
    var ids = followed();
    var url = (badges()[0] || {getAttribute: function () { return null; }})
      .getAttribute("data-modelslab-url");
    if (!ids.length || !url) {
      polling = false;
      return;
    }
    var query = ids.map(function (id) { return "id=" + encodeURIComponent(id); }).join("&");
    window.fetch(url + "?" + query, {
      credentials: "same-origin",
      headers: {"Accept": "application/json"}
    }).then(function (response) {
      if (!response.ok) { throw new Error("HTTP " + response.status); }
      return response.json();
    }).then(function (data) {
      var done = [];
      var last = null;
      data.requests.forEach(function (item) {
        badges().forEach(function (badge) {
          if (idOf(badge) !== String(item.id)) { return; }
          if (!submitting && isActive(badge) && !item.active) {
            done.push(String(item.id));
            last = badge;
          }
          update(badge, item);
        });
      });
      if (!done.length) { return null; }
      return refresh(done).catch(function () { cannotRefresh(last); });
    }).then(function () {
      schedule(pause);
    }, function () {
      schedule(Math.min(pause * 2, MAX_PAUSE));  // back off while the server is unhappy
    });
  }

  function schedule(wait) {
    polling = true;
    window.setTimeout(poll, wait);
  }

  function startPolling() {
    if (polling) { return; }
    var first = badges()[0];
    if (!first) { return; }
    var seconds = parseFloat(first.getAttribute("data-modelslab-poll"));
    pause = seconds > 0 ? seconds * 1000 : 2000;
    if (followed().length) { schedule(pause); }
  }

  // --- a form is sent once --------------------------------------------------------------

  function buttons(form) {
    return all("input[type=submit], button[type=submit], button:not([type])", form);
  }

  function generating(form, submitter) {
    var name = submitter ? submitter.name : "";
    if (GENERATE_BUTTONS.indexOf(name) !== -1) { return "form"; }
    var action = form.querySelector("select[name=action]");
    if (name === "index" && action && GENERATE_ACTIONS.indexOf(action.value) !== -1) {
      return "list";
    }
    return "";
  }

  function showProgress(form, where) {
    var source = form.querySelector("[data-modelslab-working]");
    if (!source) { return; }
    var text = source.getAttribute("data-modelslab-working");
    var note = document.createElement("span");
    note.className = "modelslab-progress";
    note.setAttribute("role", "status");
    var anchor = where === "form" ? form.querySelector(".modelslab-buttons")
      : form.querySelector(".actions");
    if (!anchor) { return; }
    anchor.appendChild(note);
    var started = Date.now();
    function tick() {
      note.textContent = text.replace("{seconds}", String(Math.round((Date.now() - started) / 1000)));
    }
    tick();
    window.setInterval(tick, 1000);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if ((form.getAttribute("method") || "").toLowerCase() !== "post") { return; }
    if (form.hasAttribute("data-modelslab-sent")) {
      event.preventDefault();  // the first post is on its way
      return;
    }
    if (event.defaultPrevented) { return; }
    form.setAttribute("data-modelslab-sent", "");
    // Disabled once the post has left: a disabled button is not sent, and its name says
    // which one was pressed.
    window.setTimeout(function () {
      buttons(form).forEach(function (button) { button.disabled = true; });
    }, 0);
    var where = generating(form, event.submitter);
    if (!where) { return; }
    submitting = true;
    showProgress(form, where);
    if (where === "form") {
      watched = badges().map(idOf).slice(0, 1);
    } else {
      watched = all("input[name=_selected_action]:checked", form).map(function (box) {
        return box.value;
      });
    }
    startPolling();
  });

  // Back to a page kept in the browser's cache: its buttons work again.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) { return; }
    all("form[data-modelslab-sent]").forEach(function (form) {
      form.removeAttribute("data-modelslab-sent");
      buttons(form).forEach(function (button) { button.disabled = false; });
    });
    all(".modelslab-progress").forEach(function (note) { note.remove(); });
    submitting = false;
    watched = [];
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startPolling);
  } else {
    startPolling();
  }
}());
