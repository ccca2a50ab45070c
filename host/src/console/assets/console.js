// wasmhook console: the little behaviour pages need beyond HTML forms. No framework, no build.
// Everything shown from the server's data is set with textContent, never as HTML.
(function () {
  "use strict";

  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function cell(row, text, label) {
    var td = document.createElement("td");
    td.textContent = text == null ? "—" : String(text);
    if (label) td.setAttribute("data-label", label);
    row.appendChild(td);
    return td;
  }

  function linkCell(row, text, href, label, test) {
    var td = document.createElement("td");
    var a = document.createElement("a");
    a.textContent = text;
    a.href = href;
    if (test) a.setAttribute("data-test", test);
    td.appendChild(a);
    td.className = "wrap";
    if (label) td.setAttribute("data-label", label);
    row.appendChild(td);
    return td;
  }

  function badgeCell(row, status, label) {
    var td = document.createElement("td");
    var span = document.createElement("span");
    var kind = { active: "good", succeeded: "good", pending: "wait", retrying: "wait",
      failed: "bad", disabled: "bad", error: "bad" }[status];
    span.className = kind ? "badge " + kind : "badge";
    span.textContent = status;
    td.appendChild(span);
    td.setAttribute("data-test", "delivery-status");
    if (label) td.setAttribute("data-label", label);
    row.appendChild(td);
  }

  function conversationOf(payload) {
    if (payload && typeof payload === "object" && payload.conversation_id != null) {
      return String(payload.conversation_id);
    }
    return "—";
  }

  // Row builders for the live tables, one per kind of stream message.
  var builders = {
    event: function (tbody, e) {
      var row = document.createElement("tr");
      row.className = "fresh";
      row.setAttribute("data-test", "event-row");
      cell(row, e.received_at, "Received");
      linkCell(row, e.id, "/console/events/" + encodeURIComponent(e.id), "Event", "event-link");
      cell(row, e.type, "Type").setAttribute("data-test", "event-type");
      cell(row, conversationOf(e.payload), "Conversation").className = "wrap";
      cell(row, e.causation ? e.causation.plugin_id : "—", "Caused by");
      tbody.insertBefore(row, tbody.firstChild);
    },
    attempt: function (tbody, a) {
      var existing = tbody.querySelector('tr[data-delivery-id="' + CSS.escape(a.delivery_id) + '"]');
      var row = document.createElement("tr");
      row.className = "fresh";
      row.setAttribute("data-test", "delivery-row");
      row.setAttribute("data-delivery-id", a.delivery_id);
      cell(row, a.attempted_at, "Last change");
      linkCell(row, a.delivery_id, "/console/deliveries/" + encodeURIComponent(a.delivery_id), "Delivery", "delivery-link");
      linkCell(row, a.event_id, "/console/events/" + encodeURIComponent(a.event_id), "Event");
      cell(row, a.event_type, "Type");
      badgeCell(row, a.status, "Status");
      cell(row, a.attempt, "Attempts");
      var result = a.status_code != null ? "HTTP " + a.status_code : (a.error_kind || "");
      if (a.error_message) result += (result ? ": " : "") + a.error_message;
      cell(row, result || "—", "Last result").className = "wrap";
      if (existing) existing.replaceWith(row); else tbody.insertBefore(row, tbody.firstChild);
    },
    log: function (tbody, l) {
      var row = document.createElement("tr");
      row.className = "fresh";
      row.setAttribute("data-test", "log-row");
      cell(row, l.at, "At");
      cell(row, l.level, "Level");
      cell(row, l.event_id, "Event").className = "wrap";
      var msg = cell(row, l.message, "Message");
      msg.className = "wrap mono";
      msg.setAttribute("data-test", "log-message");
      tbody.insertBefore(row, tbody.firstChild);
    }
  };

  // Live toggles: an EventSource on /v1/stream (the session cookie authenticates it).
  document.querySelectorAll("input[data-live]").forEach(function (toggle) {
    var source = null;
    var status = document.getElementById(toggle.getAttribute("data-live-status") || "");
    function say(text) { if (status) status.textContent = text; }
    toggle.addEventListener("change", function () {
      if (source) { source.close(); source = null; }
      if (!toggle.checked) { say("Live view off"); return; }
      var tbody = document.getElementById(toggle.getAttribute("data-live-target"));
      var kinds = toggle.getAttribute("data-live").split(",");
      source = new EventSource(toggle.getAttribute("data-live-url"), { withCredentials: true });
      source.onopen = function () { say("Live: showing new items as they happen"); };
      source.onerror = function () { say("Live view reconnecting…"); };
      kinds.forEach(function (kind) {
        source.addEventListener(kind, function (m) {
          var data;
          try { data = JSON.parse(m.data); } catch (e) { return; }
          var only = toggle.getAttribute("data-live-conversation");
          if (only && kind === "event" && conversationOf(data.payload) !== only) return;
          if (tbody && builders[kind]) builders[kind](tbody, data);
          var empty = document.querySelector('[data-empty-for="' + tbody.id + '"]');
          if (empty) empty.remove();
        });
      });
    });
  });

  // Regions that follow something until it settles: re-fetch the page, swap the region in.
  document.querySelectorAll("[data-poll]").forEach(function (region) {
    var every = parseInt(region.getAttribute("data-poll"), 10) || 1000;
    var id = region.id;
    function tick() {
      fetch(window.location.href, { credentials: "same-origin" })
        .then(function (r) { return r.text(); })
        .then(function (text) {
          var doc = new DOMParser().parseFromString(text, "text/html");
          var fresh = doc.getElementById(id);
          var current = document.getElementById(id);
          if (!fresh || !current) return;
          current.replaceWith(document.importNode(fresh, true));
          if (fresh.hasAttribute("data-poll")) setTimeout(tick, every);
        })
        .catch(function () { setTimeout(tick, every * 2); });
    }
    setTimeout(tick, every);
  });

  // Copy buttons.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source) return;
      var text = source.textContent;
      var done = function () { button.textContent = "Copied"; };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { select(source); });
      } else {
        select(source);
      }
    });
  });
  function select(node) {
    var range = document.createRange();
    range.selectNodeContents(node);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  // Plugin uploads: file picker or drag and drop; the component is the raw request body, as
  // with the API; a refusal shows the API's reason.
  document.querySelectorAll("[data-upload]").forEach(function (zone) {
    var input = zone.querySelector('input[type="file"]');
    var nameInput = zone.querySelector('input[name="name"]');
    var error = zone.querySelector("[data-upload-error]");
    var progress = zone.querySelector("[data-upload-progress]");
    function send(file) {
      if (!file) return;
      error.textContent = "";
      var url = zone.getAttribute("data-upload");
      if (nameInput) {
        var name = nameInput.value.trim() || file.name.replace(/\.wasm$/i, "");
        url += "?name=" + encodeURIComponent(name);
      }
      if (progress) progress.textContent = "Uploading " + file.name + "…";
      fetch(url, {
        method: "POST", credentials: "same-origin", body: file,
        headers: { "content-type": "application/wasm", "x-csrf-token": csrf }
      }).then(function (r) {
        return r.json().catch(function () { return { error: "HTTP " + r.status }; });
      }).then(function (answer) {
        if (progress) progress.textContent = "";
        if (answer.redirect) { window.location.assign(answer.redirect); return; }
        error.textContent = answer.error || "The upload failed.";
      }).catch(function (e) {
        if (progress) progress.textContent = "";
        error.textContent = "The upload failed: " + e;
      });
    }
    if (input) input.addEventListener("change", function () { send(input.files[0]); });
    zone.addEventListener("dragover", function (e) { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", function () { zone.classList.remove("over"); });
    zone.addEventListener("drop", function (e) {
      e.preventDefault();
      zone.classList.remove("over");
      if (e.dataTransfer && e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
    });
  });

  // A page showing a plugin version still compiling follows it: it reloads once the version is
  // ready or failed, unless a form on it was changed meanwhile (then only the status updates).
  var compiling = document.querySelector("[data-compiling]");
  if (compiling) {
    var edited = false;
    document.addEventListener("input", function () { edited = true; });
    var poll = function () {
      fetch(window.location.href, { credentials: "same-origin" }).then(function (r) {
        return r.text();
      }).then(function (text) {
        var next = new DOMParser().parseFromString(text, "text/html");
        if (next.querySelector("[data-compiling]")) { setTimeout(poll, 1000); return; }
        if (!edited) { window.location.reload(); return; }
        document.querySelectorAll("[data-compile-status]").forEach(function (node) {
          var fresh = next.querySelector('[data-compile-status="' + node.getAttribute("data-compile-status") + '"]');
          if (fresh) node.innerHTML = fresh.innerHTML;
        });
      }).catch(function () { setTimeout(poll, 3000); });
    };
    setTimeout(poll, 1000);
  }

  // "All event types" unchecks and disables the individual types.
  document.querySelectorAll("input[data-all-types]").forEach(function (all) {
    var group = all.closest("fieldset");
    function sync() {
      group.querySelectorAll("input[data-event-type]").forEach(function (box) {
        box.disabled = all.checked;
      });
    }
    all.addEventListener("change", sync);
    sync();
  });
})();
