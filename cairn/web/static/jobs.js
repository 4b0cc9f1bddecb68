// Live rows of the jobs page from /jobs/events (server-sent events); text only, no HTML.
(function () {
  const body = document.getElementById("live");
  if (!body || !window.EventSource) return;
  const size = (n) => {
    if (n === null || n === undefined) return "-";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i === 0 ? n + " B" : n.toFixed(1) + " " + units[i];
  };
  const cell = (row, text) => { const td = row.insertCell(); td.textContent = text; return td; };
  const events = new EventSource("/jobs/events");
  events.addEventListener("live", (e) => {
    const rows = JSON.parse(e.data);
    body.replaceChildren();
    if (rows.length === 0) {
      const td = cell(body.insertRow(), "Nothing is running.");
      td.colSpan = 4;
      return;
    }
    for (const r of rows) {
      const row = body.insertRow();
      row.id = r.id;
      cell(row, r.what);
      const state = document.createElement("span");
      state.className = "status " + r.state;
      state.textContent = r.state;
      row.insertCell().appendChild(state);
      cell(row, size(r.bytes));
      cell(row, r.seconds === null ? "-" : String(r.seconds));
    }
  });
})();
