/* GeneratedImageField's widget: Choose (search, paginate, pick) and Generate (prompt,
 * progress, pick a result) in <dialog>s, without leaving the form. Plain JS, no inline
 * script: the endpoints come from the widget's data-* attributes. */
"use strict";
(function () {
  const POLL_MS = 1000;

  function csrfToken(root) {
    const form = root.closest("form");
    const input = form && form.querySelector("input[name=csrfmiddlewaretoken]");
    if (input) return input.value;
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  async function getJSON(url) {
    const response = await fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    const data = await response.json().catch(() => ({}));
    return { ok: response.ok, status: response.status, data };
  }

  function errorText(data, fallback) {
    if (data.detail) return data.detail;
    if (data.errors) {
      return Object.entries(data.errors)
        .map(([field, errors]) => {
          const text = errors.map((error) => error.message || error).join(" ");
          return field === "__all__" ? text : field + ": " + text;
        })
        .join(" ");
    }
    return fallback;
  }

  function imageButton(image, onPick) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "modelslab-field-result";
    button.dataset.id = image.id;
    button.title = image.label;
    const img = document.createElement("img");
    img.src = image.thumbnail;
    img.alt = image.label;
    img.loading = "lazy";
    const caption = document.createElement("span");
    caption.textContent = "#" + image.id + " " + image.prompt;
    button.append(img, caption);
    button.addEventListener("click", () => onPick(image));
    item.append(button);
    return item;
  }

  function setUp(root) {
    if (root.dataset.ready || !root.dataset.configUrl || root.closest(".empty-form")) return;
    root.dataset.ready = "1";
    const input = root.querySelector("input[type=hidden]");
    const preview = root.querySelector(".modelslab-field-preview");
    const chooseButton = root.querySelector(".modelslab-field-choose");
    const generateButton = root.querySelector(".modelslab-field-generate");
    const clearButton = root.querySelector(".modelslab-field-clear");
    const chooser = root.querySelector(".modelslab-field-choose-dialog");
    const generator = root.querySelector(".modelslab-field-generate-dialog");
    let opener = null;
    let page = 1;
    let searchTimer = null;
    let pollTimer = null;
    let searches = 0; // only the latest search's answer is shown

    function open(dialog, button) {
      opener = button;
      dialog.showModal();
    }
    for (const dialog of [chooser, generator]) {
      dialog.addEventListener("close", () => {
        if (opener) opener.focus();
      });
      dialog.querySelector(".modelslab-field-close").addEventListener("click", () => dialog.close());
      // Enter in a dialog's field must not submit the page's form.
      dialog.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && event.target.matches("input")) {
          event.preventDefault();
          if (dialog === chooser) search(1);
          else start();
        }
      });
    }

    function updateRelatedLinks(value) {
      // The admin's view / delete links next to a foreign key (RelatedFieldWidgetWrapper).
      const wrapper = root.closest(".related-widget-wrapper");
      if (!wrapper) return;
      for (const link of wrapper.querySelectorAll("a[data-href-template]")) {
        if (value) {
          link.href = link.dataset.hrefTemplate.replace("__fk__", value);
          link.removeAttribute("aria-disabled");
        } else {
          link.removeAttribute("href");
          link.setAttribute("aria-disabled", "true");
        }
      }
    }

    function pick(image) {
      input.value = image ? image.id : "";
      preview.replaceChildren();
      if (image) {
        const img = document.createElement("img");
        img.className = "modelslab-field-thumb";
        img.src = image.thumbnail;
        img.alt = image.label;
        const caption = document.createElement("span");
        caption.className = "modelslab-field-caption";
        caption.textContent = "#" + image.id + " · " + image.prompt;
        preview.append(img, caption);
      } else {
        const empty = document.createElement("span");
        empty.className = "modelslab-field-empty";
        empty.textContent = gettext("No image chosen.");
        preview.append(empty);
      }
      if (clearButton) clearButton.hidden = !image;
      input.dispatchEvent(new Event("change", { bubbles: true }));
      updateRelatedLinks(input.value);
      for (const dialog of [chooser, generator]) if (dialog.open) dialog.close();
    }

    // --- Choose -------------------------------------------------------------------------
    const query = chooser.querySelector(".modelslab-field-q");
    const chooserStatus = chooser.querySelector(".modelslab-field-status");
    const chooserResults = chooser.querySelector(".modelslab-field-results");
    const prev = chooser.querySelector(".modelslab-field-prev");
    const next = chooser.querySelector(".modelslab-field-next");
    const pageLabel = chooser.querySelector(".modelslab-field-page");

    async function search(wanted) {
      const url = new URL(root.dataset.imagesUrl, window.location.href);
      url.searchParams.set("q", query.value.trim());
      url.searchParams.set("page", wanted);
      chooserStatus.textContent = gettext("Loading…");
      const mine = ++searches;
      const { ok, data } = await getJSON(url);
      if (mine !== searches) return;
      if (!ok) {
        chooserStatus.textContent = errorText(data, gettext("The images could not be loaded."));
        return;
      }
      page = data.page;
      chooserResults.replaceChildren(...data.results.map((image) => imageButton(image, pick)));
      chooserStatus.textContent = data.count
        ? interpolate(ngettext("%s image", "%s images", data.count), [data.count])
        : gettext("No images match.");
      pageLabel.textContent = data.pages > 1 ? page + " / " + data.pages : "";
      prev.disabled = page <= 1;
      next.disabled = page >= data.pages;
    }
    query.addEventListener("input", () => {
      window.clearTimeout(searchTimer);
      searchTimer = window.setTimeout(() => search(1), 250);
    });
    prev.addEventListener("click", () => search(page - 1));
    next.addEventListener("click", () => search(page + 1));
    chooseButton.addEventListener("click", () => {
      open(chooser, chooseButton);
      query.focus();
      search(1);
    });
    if (clearButton) clearButton.addEventListener("click", () => pick(null));

    // --- Generate -----------------------------------------------------------------------
    const generatorStatus = generator.querySelector(".modelslab-field-status");
    const generatorError = generator.querySelector(".modelslab-field-error");
    const generatorResults = generator.querySelector(".modelslab-field-results");
    const startButton = generator.querySelector(".modelslab-field-start");

    function show(generation) {
      generatorStatus.textContent = generation.label;
      generatorError.textContent = generation.error || "";
      if (generation.active) {
        pollTimer = window.setTimeout(async () => {
          const url = root.dataset.generationUrl.replace("{id}", generation.id);
          const { ok, data } = await getJSON(url);
          if (ok) show(data);
          else generatorError.textContent = errorText(data, gettext("Could not follow it."));
        }, POLL_MS);
        return;
      }
      startButton.disabled = false;
      generatorResults.replaceChildren(...generation.images.map((image) => imageButton(image, pick)));
      if (generation.images.length) {
        generatorStatus.textContent = gettext("Pick one of the results.");
        generatorResults.querySelector("button").focus();
      }
    }

    async function start() {
      if (startButton.disabled) return;
      const body = new FormData();
      for (const field of generator.querySelectorAll("[data-name]")) {
        body.append(field.dataset.name, field.value);
      }
      window.clearTimeout(pollTimer);
      startButton.disabled = true;
      generatorResults.replaceChildren();
      generatorError.textContent = "";
      generatorStatus.textContent = gettext("Starting…");
      let response;
      try {
        response = await fetch(root.dataset.generateUrl, {
          method: "POST",
          body,
          credentials: "same-origin",
          headers: { "X-CSRFToken": csrfToken(root), Accept: "application/json" },
        });
      } catch (error) {
        startButton.disabled = false;
        generatorStatus.textContent = "";
        generatorError.textContent = String(error);
        return;
      }
      const data = await response.json().catch(() => ({}));
      if (!response.ok) {
        startButton.disabled = false;
        generatorStatus.textContent = "";
        generatorError.textContent = errorText(data, response.statusText);
        return;
      }
      show(data);
    }
    startButton.addEventListener("click", start);
    generateButton.addEventListener("click", () => {
      open(generator, generateButton);
      generator.querySelector("textarea").focus();
    });

    // Generate shows only to users with generate_images: the endpoint says so.
    getJSON(root.dataset.configUrl).then(({ ok, data }) => {
      if (ok && data.can_generate) {
        generateButton.hidden = false;
        const model = generator.querySelector("[data-name=model_id]");
        if (!model.value) model.placeholder = data.default_model;
      } else {
        generateButton.remove();
      }
      root.dataset.loaded = "1";
    });
  }

  // gettext falls back to the text itself where the admin's JavaScript catalog is absent.
  if (typeof window.gettext !== "function") {
    window.gettext = (text) => text;
    window.ngettext = (one, many, n) => (n === 1 ? one : many);
    window.interpolate = (format, values) => values.reduce((text, v) => text.replace("%s", v), format);
  }
  const gettext = window.gettext;
  const ngettext = window.ngettext;
  const interpolate = window.interpolate;

  function setUpAll() {
    document.querySelectorAll(".modelslab-field").forEach(setUp);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setUpAll);
  else setUpAll();
  // Inline formsets add rows later.
  document.addEventListener("formset:added", setUpAll);
})();
