// Posts a prompt to the django-modelslab REST API, polls the request until it has finished,
// and shows its images. Plain JavaScript: session authentication plus Django's CSRF token.
"use strict";

(function () {
  const form = document.getElementById("generate");
  const statusLine = document.getElementById("status");
  const gallery = document.getElementById("images");
  const csrfToken = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const POLL_MS = 500;

  function say(text, failed) {
    statusLine.textContent = text;
    statusLine.className = failed ? "failed" : "";
  }

  async function call(url, options) {
    const response = await fetch(url, {
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken },
      ...options,
    });
    const body = await response.json();
    if (!response.ok) {
      const detail = body.detail || Object.entries(body).map(([k, v]) => `${k}: ${v}`).join("; ");
      throw new Error(detail || response.statusText);
    }
    return body;
  }

  function show(generation) {
    gallery.replaceChildren();
    for (const image of generation.images.filter((item) => !item.superseded)) {
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.src = image.url;
      img.alt = generation.prompt;
      img.width = image.width;
      img.height = image.height;
      img.dataset.sha256 = image.sha256;
      const caption = document.createElement("figcaption");
      caption.textContent = `${image.width}×${image.height} · sha256 ${image.sha256.slice(0, 12)}…`;
      figure.append(img, caption);
      gallery.append(figure);
    }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const side = Number(data.get("size"));
    const button = form.querySelector("button");
    button.disabled = true;
    gallery.replaceChildren();
    try {
      say("Sending…");
      let generation = await call(form.dataset.api, {
        method: "POST",
        body: JSON.stringify({
          prompt: data.get("prompt"),
          width: side,
          height: side,
          samples: Number(data.get("samples")),
        }),
      });
      while (!generation.finished) {
        say(`Request #${generation.id}: ${generation.status}…`);
        await sleep(POLL_MS);
        generation = await call(generation.links.self, { method: "GET" });
      }
      if (generation.status === "failed" || generation.status === "refused") {
        say(`Request #${generation.id} ${generation.status}: ${generation.error}`, true);
      } else {
        say(`Request #${generation.id}: ${generation.status}`);
        show(generation);
      }
    } catch (error) {
      say(`Error: ${error.message}`, true);
    } finally {
      button.disabled = false;
    }
  });
})();
