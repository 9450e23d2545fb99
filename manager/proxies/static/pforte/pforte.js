// pforte manager: copy buttons that also work on plain http, where navigator.clipboard is absent
// (it exists only in secure contexts): the fallback selects the text and uses execCommand("copy").
"use strict";
function pforteCopy(text, button) {
  function done(ok) {
    if (!button) return;
    const old = button.textContent;
    button.textContent = ok ? "Copied" : "Select and copy by hand";
    setTimeout(() => { button.textContent = old; }, 1500);
  }
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(() => done(true), () => done(fallback(text)));
  } else {
    done(fallback(text));
  }
}
function fallback(text) {
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
  document.body.removeChild(area);
  return ok;
}
document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-copy]");
  if (!b) return;
  const src = b.dataset.copy ? document.getElementById(b.dataset.copy) : b.previousElementSibling;
  if (src) pforteCopy(src.textContent.trim(), b);
});
