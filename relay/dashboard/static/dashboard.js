// relay dashboard: small progressive enhancements; every page works without this file.
"use strict";

// The CSRF token of this session, for fetch() requests (sent as X-CSRF-Token).
function relayCsrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

// POST with the session's CSRF token; resolves to the fetch Response.
function relayPost(url, body) {
  return fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-CSRF-Token": relayCsrfToken(), "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams(body || {}),
  });
}

// Buttons with data-copy="ELEMENT_ID" copy that element's text to the clipboard.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (source && navigator.clipboard) {
    navigator.clipboard.writeText(source.textContent.trim()).then(() => {
      button.textContent = "Copied";
    }, () => {});
  }
});

window.relay = { csrfToken: relayCsrfToken, post: relayPost };
