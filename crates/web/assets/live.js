// The runs in progress, refreshed every second from /api/live. Data goes in
// with textContent only: nothing the store holds is parsed as HTML.
"use strict";

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function render(data) {
  const body = document.querySelector("#live tbody");
  const rows = data.runs.map((run) => {
    const tr = document.createElement("tr");
    const link = document.createElement("a");
    link.href = "/runs/" + encodeURIComponent(run.run_id);
    link.textContent = run.run_id;
    const first = document.createElement("td");
    first.appendChild(link);
    tr.appendChild(first);
    const started = Date.parse(run.started_at);
    const elapsed = Number.isNaN(started) ? "" : String(Math.max(0, Date.now() - started));
    [run.plugin, run.status, run.started_at, elapsed, "", "", ""].forEach((t) => tr.appendChild(cell(t)));
    return tr;
  });
  body.replaceChildren(...rows);
  const count = document.getElementById("live-count");
  count.dataset.count = String(data.runs.length);
  const load = data.load || {};
  count.textContent = data.runs.length + " running"
    + (load.queued !== undefined ? ", " + load.queued + " queued" : "");
}

async function refresh() {
  try {
    const answer = await fetch("/api/live", { credentials: "same-origin" });
    if (answer.status === 401) {
      window.location.assign("/login");
      return;
    }
    render(await answer.json());
  } catch (e) {
    document.getElementById("live-count").textContent = "cannot reach the daemon: " + e;
  }
}

refresh();
setInterval(refresh, 1000);
