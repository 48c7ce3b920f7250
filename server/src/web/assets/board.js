// The board's only script: refresh the live part every few seconds without a
// full reload. No framework; served from the same origin (CSP 'self').
(function () {
  'use strict';
  var live = document.getElementById('live');
  if (!live || !window.fetch) return;
  var stamp = document.getElementById('updated');
  function tick() {
    // Leave the part alone while someone is using a form inside it.
    if (live.contains(document.activeElement) && document.activeElement !== live) return;
    fetch('/board/live' + window.location.search, { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) {
        if (r.status === 401) { window.location.reload(); return null; }
        return r.ok ? r.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        live.innerHTML = html;
        if (stamp) stamp.textContent = 'Updated ' + new Date().toLocaleTimeString();
      })
      .catch(function () { if (stamp) stamp.textContent = 'Offline: retrying.'; });
  }
  window.setInterval(tick, 3000);
}());
