/* django-modelslab in Wagtail's admin: Images → Generate and the image chooser's Generate tab.
 *
 * The prompt form is posted to the generate endpoint (the pipeline runs it in the background),
 * its progress is polled, and the results are shown as they arrive. On Images → Generate the
 * editor ticks results and adds them to the collection (an ordinary form post). In the chooser
 * a click on a result submits the tab's pick form, which Wagtail's modal posts (as its upload
 * form) and whose answer chooses the new library image for the field.
 *
 * Loaded again each time the chooser opens: the script sets itself up once and starts every
 * [data-modelslab-generate] root not started yet. Plain JS, no build step. */
(function () {
  "use strict";

  var POLL_MS = 1000;

  function start(root) {
    if (root.hasAttribute("data-started")) { return; }
    root.setAttribute("data-started", "");
    var form = root.querySelector(".modelslab-generate__form");
    var status = root.querySelector(".modelslab-generate__status");
    var error = root.querySelector(".modelslab-generate__error");
    var results = root.querySelector(".modelslab-generate__results");
    var hint = root.querySelector(".modelslab-generate__hint");
    var mode = root.getAttribute("data-mode");
    var button = form.querySelector(".modelslab-generate__start");
    var timer = null;
    var started = 0;
    var shown = {};

    function collection() {
      var select = form.querySelector("select[name$=collection]");
      return select ? select.value : "";
    }

    function say(text) {
      status.textContent = text;
      status.hidden = !text;
    }

    function fail(text) {
      error.textContent = text;
      error.hidden = !text;
    }

    function errorText(data, fallback) {
      if (data.detail) { return data.detail; }
      if (data.errors) {
        return Object.keys(data.errors).map(function (field) {
          var text = data.errors[field].map(function (item) { return item.message || item; })
            .join(" ");
          return field === "__all__" ? text : field + ": " + text;
        }).join(" ");
      }
      return fallback;
    }

    function pick(image) {
      var pickForm = root.querySelector(".modelslab-generate__pick");
      pickForm.querySelector("input[name=image]").value = image.id;
      pickForm.querySelector("input[name=collection]").value = collection();
      results.setAttribute("aria-busy", "true");
      // Wagtail's modal listens for this form's submit and posts it (ajaxifyCreationForm).
      pickForm.requestSubmit();
    }

    function show(images) {
      images.forEach(function (image) {
        if (shown[image.id]) { return; }
        shown[image.id] = true;
        var item = document.createElement(mode === "chooser" ? "button" : "label");
        item.className = "modelslab-generate__result";
        item.setAttribute("role", "listitem");
        item.setAttribute("data-id", image.id);
        var img = document.createElement("img");
        img.src = image.thumbnail;
        img.alt = image.label;
        img.width = 200;
        img.height = Math.round(200 * image.height / image.width);
        item.appendChild(img);
        var size = document.createElement("span");
        size.textContent = image.width + "×" + image.height;
        if (mode === "chooser") {
          item.type = "button";
          item.title = image.label;
          item.addEventListener("click", function () { pick(image); });
        } else {
          var box = document.createElement("input");
          box.type = "checkbox";
          box.name = "image";
          box.value = image.id;
          box.setAttribute("aria-label", image.label);
          item.appendChild(box);
        }
        item.appendChild(size);
        results.appendChild(item);
      });
      if (images.length) {
        hint.hidden = false;
        var add = root.querySelector(".modelslab-generate__add-button");
        if (add) { add.hidden = false; }
      }
    }

    function follow(generation) {
      show(generation.images);
      if (generation.active) {
        say(root.getAttribute("data-working")
          .replace("{seconds}", String(Math.round((Date.now() - started) / 1000)))
          + " " + generation.label);
        timer = window.setTimeout(function () { poll(generation.id); }, POLL_MS);
        return;
      }
      button.disabled = false;
      say(generation.label);
      if (generation.error) {
        fail(generation.error);
      } else if (!generation.images.length) {
        fail(root.getAttribute(generation.status === "succeeded" ? "data-none" : "data-failed"));
      }
    }

    function poll(id) {
      var url = root.getAttribute("data-progress-url").replace(/0\/$/, id + "/");
      window.fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}})
        .then(function (response) {
          return response.json().then(function (data) { return {ok: response.ok, data: data}; });
        })
        .then(function (answer) {
          if (!answer.ok) {
            button.disabled = false;
            fail(errorText(answer.data, "HTTP error"));
            return;
          }
          follow(answer.data);
        }, function () {
          timer = window.setTimeout(function () { poll(id); }, POLL_MS * 2);
        });
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (button.disabled) { return; }
      window.clearTimeout(timer);
      button.disabled = true;
      fail("");
      started = Date.now();
      say(root.getAttribute("data-working").replace("{seconds}", "0"));
      var body = new FormData(form);
      var token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
      window.fetch(root.getAttribute("data-generate-url"), {
        method: "POST",
        body: body,
        credentials: "same-origin",
        headers: {Accept: "application/json", "X-CSRFToken": token}
      }).then(function (response) {
        return response.json().then(function (data) { return {ok: response.ok, data: data}; });
      }).then(function (answer) {
        if (!answer.ok) {
          button.disabled = false;
          say("");
          fail(errorText(answer.data, "HTTP error"));
          return;
        }
        follow(answer.data);
      }, function () {
        button.disabled = false;
        say("");
        fail(root.getAttribute("data-failed"));
      });
    });

    var addForm = root.querySelector(".modelslab-generate__add");
    if (addForm) {
      addForm.addEventListener("submit", function () {
        addForm.querySelector("input[name=collection]").value = collection();
      });
    }

    var followed = root.getAttribute("data-follow");
    if (followed) {
      started = Date.now();
      button.disabled = true;
      poll(followed);
    }
  }

  function startAll() {
    Array.prototype.forEach.call(document.querySelectorAll("[data-modelslab-generate]"), start);
  }

  window.modelslabGenerate = {start: start, startAll: startAll};
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", startAll);
  } else {
    startAll();
  }
}());
