// The UI's live parts, without a build step: parts marked data-refresh re-fetch themselves every second,
// the create form asks for a preview as it changes, and forms marked data-confirm ask first.
"use strict";

const csrfToken = () => document.querySelector('meta[name="csrf-token"]').content;

async function refresh(element) {
  const response = await fetch(element.dataset.refresh, { credentials: "same-origin" });
  // Logged out meanwhile (token revoked, session expired): the whole page goes to the login form.
  if (response.redirected) window.location.assign(response.url);
  else if (response.ok) element.innerHTML = await response.text();
}

function preview(form) {
  const target = document.getElementById("preview");
  return async () => {
    const response = await fetch(form.dataset.preview, {
      method: "POST", body: new FormData(form), credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken() },
    });
    target.innerHTML = response.ok
      ? await response.text()
      : `<p class="flash error" role="alert">No preview: the server answered ${response.status}.</p>`;
    // Under TCG neither card's mode applies: both say which named model is used instead.
    const note = target.querySelector("template[data-cpu-note]");
    for (const slot of form.querySelectorAll(".card-note")) slot.textContent = note ? note.content.textContent.trim() : "";
  };
}

document.addEventListener("DOMContentLoaded", () => {
  for (const element of document.querySelectorAll("[data-refresh]")) {
    setInterval(() => refresh(element), 1000);
  }
  const form = document.getElementById("create-form");
  if (form) {
    const update = preview(form);
    let timer;
    form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(update, 200); });
    update();
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => { if (!confirm(form.dataset.confirm)) event.preventDefault(); });
  }
});
