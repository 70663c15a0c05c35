// The template editor's live preview: as the fields change, post them (with the sample variables) to the
// preview route, which renders them as the API does; show the HTML in the sandboxed iframe (srcdoc), the text
// and the subject as text, and syntax errors with their line numbers next to their field.
"use strict";

(() => {
  const form = document.getElementById("template-form");
  if (!form || !window.relay) return;
  const frame = document.getElementById("preview-html");
  const text = document.getElementById("preview-text");
  const subject = document.getElementById("preview-subject");
  const failure = document.getElementById("preview-error");
  const variablesError = document.getElementById("e-variables");
  const state = document.getElementById("preview-state");
  let timer = null;
  let sequence = 0;

  function showProblems(errors) {
    form.querySelectorAll(".problems").forEach((box) => {
      box.replaceChildren();
      errors.filter((e) => e.field === box.dataset.part).forEach((e) => {
        const p = document.createElement("p");
        p.className = "error syntax-error";
        p.textContent = `${e.field} ${e.line ? `line ${e.line}: ` : ""}${e.message}`;
        box.appendChild(p);
      });
    });
  }

  function showMessage(element, message) {
    element.textContent = message || "";
    element.hidden = !message;
  }

  function show(result) {
    showProblems(result.errors || []);
    showMessage(variablesError, result.variables_error);
    showMessage(failure, result.error);
    const ok = !result.error && !result.variables_error && !(result.errors || []).length;
    state.textContent = ok ? "Rendered with the sample variables; not saved." : "Not rendered: see the errors.";
    if (ok) {
      subject.textContent = result.subject || "";
      frame.srcdoc = result.html || "";
      text.textContent = result.text || "";
    }
  }

  // data-previewing is set from a change until its preview is shown (tests wait for it to go).
  async function refresh() {
    const mine = ++sequence;
    const body = Object.fromEntries(new FormData(form));
    body.format = "json";
    try {
      const response = await window.relay.post(form.dataset.preview, body);
      if (mine === sequence && response.ok) show(await response.json()); // else a newer one is on its way
    } finally {
      if (mine === sequence) delete form.dataset.previewing;
    }
  }

  form.addEventListener("input", () => {
    form.dataset.previewing = "1";
    clearTimeout(timer);
    timer = setTimeout(refresh, 300);
  });
  form.dataset.previewing = "1";
  refresh();
})();
