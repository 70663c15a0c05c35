// The overview refreshes itself: every data-refresh seconds, fetch the live part (data-src) and swap it in.
// Without this file the page is complete as loaded.
"use strict";

(function () {
  const holder = document.getElementById("overview-live");
  if (!holder) return;
  const seconds = Number(holder.dataset.refresh) || 10;
  let busy = false;

  async function refresh() {
    if (busy || document.hidden) return;
    busy = true;
    try {
      const response = await fetch(holder.dataset.src, { credentials: "same-origin", headers: { Accept: "text/html" } });
      // A lost session answers with the login page (after a redirect): keep what is shown.
      if (!response.ok || response.redirected) return;
      const parsed = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = parsed.querySelector("section.live");
      const current = holder.querySelector("section.live");
      if (fresh && current) {
        current.replaceWith(document.importNode(fresh, true));
        holder.dataset.swaps = String(Number(holder.dataset.swaps || 0) + 1);
      }
    } catch (error) {
      // offline or the relay restarting: try again next time
    } finally {
      busy = false;
    }
  }

  window.setInterval(refresh, seconds * 1000);
})();
