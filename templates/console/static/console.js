// The console's only script (served from this origin; the pages work without it).
// - [data-refresh="SECONDS"][data-src="URL"]: reloads that fragment while it says it is live
//   (a running close's progress), stopping when the server's fragment drops data-refresh.
// - select[data-submit]: a filter that applies when changed.
"use strict";

function refreshFragment(element) {
  const seconds = Number(element.dataset.refresh);
  if (!seconds || !element.dataset.src) return;
  window.setTimeout(async () => {
    try {
      const answer = await fetch(element.dataset.src, { credentials: "same-origin" });
      if (!answer.ok) return;
      const holder = document.createElement("div");
      holder.innerHTML = await answer.text();  // the server's own escaped HTML
      const fresh = holder.firstElementChild;
      if (!fresh) return;
      element.replaceWith(fresh);
      refreshFragment(fresh);
    } catch (_error) {
      refreshFragment(element);  // try again later
    }
  }, seconds * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(refreshFragment);
  document.querySelectorAll("select[data-submit]").forEach((select) => {
    select.addEventListener("change", () => select.form && select.form.requestSubmit());
  });
});
