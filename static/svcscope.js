// svcscope: small glue around htmx. No frameworks, no inline event handlers (the CSP forbids them).
(function () {
  "use strict";

  var CSRF_URL = "/api/v1/csrf";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  // Every htmx request carries the CSRF token from the page's <meta>.
  document.addEventListener("htmx:configRequest", function (evt) {
    var token = csrfToken();
    if (token) { evt.detail.headers["X-CSRF-Token"] = token; }
  });

  // -- failed requests: one handler for every form, button and link driven by htmx ------------------

  // Where a failure is told: an aria-live region right after the form (or the element) that sent it.
  function messageBox(elt) {
    var anchor = (elt && elt.closest && elt.closest("form")) || elt || document.querySelector("main");
    if (!anchor || !anchor.parentNode) { anchor = document.querySelector("main"); }
    var next = anchor.nextElementSibling;
    if (next && next.classList.contains("request-message")) { return next; }
    var box = document.createElement("div");
    box.className = "request-message";
    box.setAttribute("role", "alert");
    box.setAttribute("aria-live", "assertive");
    box.dataset.testid = "request-message";
    anchor.parentNode.insertBefore(box, anchor.nextSibling);
    return box;
  }

  function tell(elt, text, kind) {
    var box = messageBox(elt);
    box.className = "request-message diag " + (kind || "error");
    box.dataset.kind = kind || "error";
    box.textContent = text;  // text, never markup: the message may quote user input
  }

  function clearMessage(elt) {
    var anchor = (elt && elt.closest && elt.closest("form")) || elt;
    var next = anchor && anchor.nextElementSibling;
    if (next && next.classList.contains("request-message") && next.dataset.kind !== "info") {
      next.remove();
    }
  }

  // The server answers errors as JSON {"detail": ...} (API, security checks) or as an error page.
  function serverMessage(xhr) {
    var body = xhr.responseText || "";
    var type = xhr.getResponseHeader("content-type") || "";
    if (type.indexOf("json") !== -1) {
      try {
        var data = JSON.parse(body);
        if (data && data.errors && data.errors.length) {
          return data.errors.map(function (e) { return e.parameter + ": " + e.message; }).join("; ");
        }
        if (data && typeof data.detail === "string") { return data.detail; }
      } catch (e) { /* not JSON after all: fall through */ }
    }
    if (type.indexOf("html") !== -1) {
      var doc = new DOMParser().parseFromString(body, "text/html");
      var msg = doc.querySelector("#error-message");
      var items = Array.prototype.map.call(doc.querySelectorAll(".error-page li"), function (li) {
        return li.textContent.trim();
      });
      if (msg) { return items.length ? items.join("; ") : msg.textContent.trim(); }
    }
    return body.slice(0, 300) || xhr.statusText || "no message";
  }

  function isStaleCsrf(xhr, text) {
    return xhr.status === 403 && /csrf token/i.test(text);
  }

  // Fetch a fresh token (the endpoint also sets the cookie) and put it everywhere the page sends it.
  function renewCsrf() {
    return fetch(CSRF_URL, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (!r.ok) { throw new Error("GET " + CSRF_URL + " answered " + r.status); }
        return r.json();
      })
      .then(function (data) {
        var token = data.token || data.csrf_token;
        if (!token) { throw new Error("no token in the answer of " + CSRF_URL); }
        var meta = document.querySelector('meta[name="csrf-token"]');
        if (meta) { meta.content = token; }
        document.querySelectorAll('input[name="csrf_token"]').forEach(function (i) { i.value = token; });
        return token;
      });
  }

  // Send the same request again, once: a form is submitted again, anything else re-triggered.
  function retry(elt) {
    elt.dataset.csrfRetried = "1";
    var form = elt.closest && elt.closest("form");
    if (form && form.requestSubmit) { form.requestSubmit(); } else { htmx.trigger(elt, "click"); }
  }

  document.addEventListener("htmx:responseError", function (evt) {
    var xhr = evt.detail.xhr;
    var elt = evt.detail.elt;
    var text = serverMessage(xhr);
    var form = (elt.closest && elt.closest("form")) || elt;
    if (isStaleCsrf(xhr, text) && !form.dataset.csrfRetried) {
      tell(elt, "The page's security token had expired (the dashboard restarted?): renewing it and sending again…", "info");
      renewCsrf().then(function () {
        form.dataset.csrfRetried = "1";
        tell(elt, "The page's security token was renewed (the dashboard had restarted); the request was sent again.", "info");
        retry(form);
      }, function (err) {
        tell(elt, xhr.status + ": " + text + " — renewing the token failed (" + err.message + "): reload the page.");
      });
      return;
    }
    tell(elt, xhr.status + " " + (xhr.statusText || "") + ": " + text);
  });

  document.addEventListener("htmx:sendError", function (evt) {
    tell(evt.detail.elt, "No answer from the dashboard (network error): is kubectl port-forward still running? " +
      "The request was not sent.");
  });

  document.addEventListener("htmx:timeout", function (evt) {
    tell(evt.detail.elt, "The dashboard did not answer in time; try again.");
  });

  document.addEventListener("htmx:afterRequest", function (evt) {
    var xhr = evt.detail.xhr;
    if (evt.detail.successful && xhr && xhr.status < 400) {
      var form = (evt.detail.elt.closest && evt.detail.elt.closest("form")) || evt.detail.elt;
      clearMessage(evt.detail.elt);
      // Answered: a later token expiry may be renewed again.
      if (form.dataset) { delete form.dataset.csrfRetried; }
    }
  });

  // -- the "live" indicator: green while every stream on the page is open, red while one reconnects ---

  var streams = new Map();

  function updateConn() {
    var el = document.getElementById("conn-status");
    if (!el) { return; }
    var down = 0, up = 0;
    streams.forEach(function (state, elt) {
      if (!elt.isConnected) { streams.delete(elt); return; }
      if (state === "open") { up += 1; } else { down += 1; }
    });
    var text, cls;
    if (down) { text = "stream down, reconnecting…"; cls = "conn-down"; }
    else if (up) { text = "live"; cls = "conn-live"; }
    else { text = "not live"; cls = "conn-idle"; }
    el.textContent = text;
    el.className = "conn " + cls;
    el.title = down ? "The live update stream is interrupted; the browser reconnects by itself." :
      (up ? "Updates arrive live over Server-Sent Events." : "Nothing on this page updates live.");
  }

  document.addEventListener("htmx:sseOpen", function (evt) { streams.set(evt.detail.elt, "open"); updateConn(); });
  document.addEventListener("htmx:sseError", function (evt) { streams.set(evt.detail.elt, "down"); updateConn(); });
  document.addEventListener("htmx:sseClose", function (evt) { streams.delete(evt.detail.elt); updateConn(); });
  // A swapped-out stream (a finished run) no longer counts.
  document.addEventListener("htmx:afterSettle", updateConn);

  // -- the probe form: offer only combinations that can work -----------------------------------------

  function syncProtocol(form) {
    var port = form.querySelector('select[name="port"]');
    var proto = form.querySelector('select[name="protocol"]');
    if (!port || !proto) { return; }
    var opt = port.options[port.selectedIndex];
    var transport = opt.dataset.transport;  // TCP or UDP: what the Service port carries
    var suggested = opt.dataset.protocol;   // HTTP, TCP or UDP
    Array.prototype.forEach.call(proto.options, function (o) {
      o.disabled = transport === "UDP" ? o.value !== "UDP" : o.value === "UDP";
    });
    if (proto.options[proto.selectedIndex].disabled || port.dataset.lastPort !== port.value) {
      proto.value = suggested;
    }
    port.dataset.lastPort = port.value;
    var method = form.querySelector('select[name="method"]');
    var path = form.querySelector('input[name="path"]');
    var http = proto.value === "HTTP";
    if (method) { method.disabled = !http; }
    if (path) { path.disabled = !http; }
  }

  // Remote origins send at most a given number of requests at a time (the panel carries the limit).
  function syncConcurrency(form) {
    var origin = form.querySelector('select[name="origin"]');
    var conc = form.querySelector('input[name="concurrency"]');
    if (!conc) { return; }
    var limits = {};
    try { limits = JSON.parse(form.dataset.concurrencyLimits || "{}"); } catch (e) { limits = {}; }
    var key = origin ? origin.value : "dashboard";
    var max = limits[key];
    if (max === undefined) { return; }
    conc.max = String(max);
    if (Number(conc.value) > max) { conc.value = String(max); }
    var note = form.querySelector(".concurrency-note");
    if (note) {
      note.textContent = max === 1 && key !== "dashboard" ? "this origin sends one request at a time" : "";
    }
    var exec = form.querySelector('input[name="exec_pod"]');
    var pick = form.querySelector('select[name="exec_pick"]');
    if (exec) {
      // A container picked from the list names the pod: the typed name is then not needed.
      exec.required = key === "exec" && !(pick && pick.value);
      exec.closest("label").hidden = key !== "exec";
    }
  }

  function initForms(root) {
    (root.querySelectorAll ? root : document).querySelectorAll("form.probe-form").forEach(function (form) {
      if (form.dataset.ready) { return; }
      form.dataset.ready = "1";
      form.addEventListener("change", function (e) {
        if (e.target.name === "port" || e.target.name === "protocol") { syncProtocol(form); }
        if (e.target.name === "origin" || e.target.name === "exec_pick") { syncConcurrency(form); }
      });
      syncProtocol(form);
      syncConcurrency(form);
    });
  }

  // A new run appears where the user can see it.
  document.addEventListener("htmx:afterSwap", function (evt) {
    var target = evt.detail.target;
    if (target && target.id === "probe-run" && target.firstElementChild) {
      target.firstElementChild.scrollIntoView({ block: "nearest" });
    }
  });

  // -- the per-request strip: arrow keys move between cells, each cell tells its request ------------

  document.addEventListener("keydown", function (evt) {
    var cell = evt.target;
    if (cell.classList && cell.classList.contains("strip")) {
      var first = cell.querySelector(".cell");
      if (first && /^Arrow|Home|End/.test(evt.key)) { first.tabIndex = 0; first.focus(); evt.preventDefault(); }
      return;
    }
    if (!cell.classList || !cell.classList.contains("cell") || !cell.closest(".strip")) { return; }
    var step = { ArrowRight: 1, ArrowLeft: -1, Home: -Infinity, End: Infinity }[evt.key];
    if (step === undefined) { return; }
    var cells = Array.prototype.slice.call(cell.closest(".strip").querySelectorAll(".cell"));
    var i = cells.indexOf(cell);
    var j = step === -Infinity ? 0 : step === Infinity ? cells.length - 1 : Math.max(0, Math.min(cells.length - 1, i + step));
    cells[i].tabIndex = -1;
    cells[j].tabIndex = 0;
    cells[j].focus();
    evt.preventDefault();
  });

  // -- the watch timeline: the stream appends seconds; keep the newest data-max (a second sent again after a
  //    reconnect replaces the copy the strip has), so a long watch cannot grow the page without bound.

  document.addEventListener("htmx:sseMessage", function (evt) {
    var strip = evt.target;
    if (!strip.classList || !strip.classList.contains("watch-strip")) { return; }
    var seen = {};
    for (var col = strip.lastElementChild; col; ) {
      var prev = col.previousElementSibling;
      if (col.id && seen[col.id]) { strip.removeChild(col); } else { seen[col.id] = true; }
      col = prev;
    }
    var max = Number(strip.dataset.max) || 120;
    while (strip.children.length > max) { strip.removeChild(strip.firstElementChild); }
    if (strip.scrollWidth > strip.clientWidth) { strip.scrollLeft = strip.scrollWidth; }
  });

  // -- the list: the namespace dropdown follows namespaces as they come and go -----------------------

  document.addEventListener("htmx:sseBeforeMessage", function (evt) {
    if (evt.detail.type !== "namespaces") { return; }
    evt.preventDefault();  // data for the dropdown, not markup to swap
    var select = document.querySelector('select[name="namespace"]');
    if (!select) { return; }
    var names;
    try { names = JSON.parse(evt.detail.data); } catch (e) { return; }
    var current = select.value;
    var keep = select.options[0];
    while (select.options.length > 1) { select.remove(1); }
    names.forEach(function (ns) {
      var o = document.createElement("option");
      o.value = ns; o.textContent = ns;
      if (ns === current) { o.selected = true; }
      select.appendChild(o);
    });
    if (current && names.indexOf(current) === -1) {
      var gone = document.createElement("option");
      gone.value = current; gone.textContent = current + " (deleted)"; gone.selected = true;
      select.appendChild(gone);
    }
    keep.selected = !current;
  });

  function ready() { initForms(document); updateConn(); }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", ready); } else { ready(); }
  document.addEventListener("htmx:load", function (evt) { initForms(evt.detail.elt.parentNode || document); });
})();
