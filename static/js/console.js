// Small enhancements on top of server-rendered pages; everything works without this file
// except the copy buttons. No inline handlers anywhere (strict CSP).
(function () {
  "use strict";

  var modal = function () { return document.getElementById("modal"); };

  // The browser's time zone for the usage dashboard, which falls back to it when the person has
  // chosen none in Settings (usage.views.dashboard_zone). IANA names are cookie-safe as they are.
  (function rememberTimeZone() {
    var zone;
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (error) { return; }
    if (!zone || !/^[A-Za-z0-9_+\-\/]+$/.test(zone)) { return; }
    if (document.cookie.split("; ").indexOf("tz=" + zone) !== -1) { return; }
    var secure = window.location.protocol === "https:" ? "; secure" : "";
    document.cookie = "tz=" + zone + "; path=/; max-age=31536000; samesite=lax" + secure;
  })();

  function openModal() {
    var dialog = modal();
    if (dialog && !dialog.open) { dialog.showModal(); }
    var focus = dialog && dialog.querySelector("[autofocus], input:not([type=hidden]), select, button");
    if (focus) { focus.focus(); }
  }

  function closeModal() {
    var dialog = modal();
    if (dialog && dialog.open) { dialog.close(); }
  }

  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "modal") { openModal(); }
  });

  document.body.addEventListener("close-modal", closeModal);

  document.addEventListener("close", function (event) {
    // Emptied on close so that a secret shown once does not linger in the page.
    if (event.target.id === "modal") { event.target.innerHTML = ""; }
  }, true);

  document.addEventListener("click", function (event) {
    var closer = event.target.closest("[data-close-modal]");
    if (closer && modal() && modal().open) {
      event.preventDefault();
      closeModal();
      // Emptied at once too (not only on the asynchronous close event): a secret shown once is
      // gone the moment its dialog is. Not on a server's close-modal: htmx still swaps after it.
      modal().innerHTML = "";
      return;
    }
    var copy = event.target.closest("[data-copy], [data-copy-from]");
    if (copy) {
      var text = copy.dataset.copy;
      if (copy.dataset.copyFrom) {
        var source = document.querySelector(copy.dataset.copyFrom);
        text = source ? (source.value || source.textContent) : "";
      }
      if (navigator.clipboard && text) {
        navigator.clipboard.writeText(text).then(function () {
          copy.classList.add("copied");
          setTimeout(function () { copy.classList.remove("copied"); }, 1500);
        });
      }
    }
  });
})();
