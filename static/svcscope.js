// svcscope: tiny glue around htmx. No frameworks, no inline event handlers.
(function () {
  "use strict";
  // Every htmx request carries the CSRF token from the page's <meta>.
  document.addEventListener("htmx:configRequest", function (evt) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) { evt.detail.headers["X-CSRF-Token"] = meta.content; }
  });
  // Show whether the live stream is connected.
  document.addEventListener("htmx:sseOpen", function () { setConn("live", "conn-live"); });
  document.addEventListener("htmx:sseError", function () { setConn("reconnecting…", "conn-down"); });
  function setConn(text, cls) {
    var el = document.getElementById("conn-status");
    if (el) { el.textContent = text; el.className = "conn " + cls; }
  }
})();
