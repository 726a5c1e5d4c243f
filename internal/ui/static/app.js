// Live updates: pages work without this script; it only keeps counts,
// progress bars and charts current while batches run. Values are written
// with textContent and properties, never as HTML.
"use strict";

(function () {
  function fill(root, ev) {
    root.querySelectorAll("[data-field]").forEach(function (el) {
      var f = el.getAttribute("data-field");
      switch (f) {
        case "bar": el.value = ev.percent; break;
        case "percent": el.textContent = ev.percent.toFixed(1); break;
        case "rate": el.textContent = ev.rate; break;
        case "status":
          el.textContent = ev.status;
          el.className = "status s-" + ev.status;
          break;
        default:
          if (f in ev) { el.textContent = String(ev[f]); }
      }
    });
  }

  function refreshCharts() {
    var charts = document.getElementById("charts");
    if (!charts) { return; }
    fetch(charts.getAttribute("data-src"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        // The fragment is the server's own SVG of numbers (see charts.go).
        if (html !== null) { charts.innerHTML = html; }
      })
      .catch(function () {});
  }

  function follow(ids, onEnd) {
    var q = ids.map(function (id) { return "batch=" + encodeURIComponent(id); }).join("&");
    var src = new EventSource("/events?" + q);
    src.addEventListener("progress", function (m) {
      var ev;
      try { ev = JSON.parse(m.data); } catch (e) { return; }
      document.querySelectorAll("[data-batch]").forEach(function (row) {
        if (row.getAttribute("data-batch") === ev.batch_id) { fill(row, ev); }
      });
      window.fanoutLiveEvents = (window.fanoutLiveEvents || 0) + 1;
    });
    src.addEventListener("end", function () { src.close(); if (onEnd) { onEnd(); } });
    return src;
  }

  document.addEventListener("DOMContentLoaded", function () {
    var list = document.getElementById("batches");
    if (list && list.getAttribute("data-live")) {
      follow(list.getAttribute("data-live").split(" "));
    }
    var one = document.getElementById("summary");
    if (one && one.getAttribute("data-live")) {
      var timer = setInterval(refreshCharts, 5000);
      follow([one.getAttribute("data-live")], function () {
        clearInterval(timer);
        refreshCharts();
        var note = one.querySelector(".live-note");
        if (note) { note.hidden = false; }
      });
    }
  });
})();
