// The Mini-Mesh dashboard: polls the server's JSON (/api/graph, /api/series, /api/status)
// every REFRESH_MS and redraws; the graph is cytoscape, the charts Chart.js (vendored).
"use strict";

const REFRESH_MS = 2000;
const COLOURS = { ok: "#2e7d32", degraded: "#f9a825", failing: "#c62828", idle: "#9e9e9e" };
const SERIES_COLOURS = ["#1565c0", "#6a1b9a", "#00838f", "#ef6c00", "#4e342e", "#ad1457"];

const cy = cytoscape({
  container: document.getElementById("graph"),
  style: [
    { selector: "node", style: { "label": "data(label)", "text-valign": "center", "text-halign": "center",
      "background-color": "#eceff1", "border-width": 2, "border-color": "#546e7a", "shape": "round-rectangle",
      "width": 110, "height": 46, "font-size": 13, "text-wrap": "wrap" } },
    { selector: "edge", style: { "label": "data(label)", "curve-style": "bezier", "target-arrow-shape": "triangle",
      "width": 3, "line-color": "data(colour)", "target-arrow-color": "data(colour)", "font-size": 11,
      "text-background-color": "#fff", "text-background-opacity": 0.9, "text-background-padding": 2,
      "text-rotation": "autorotate", "text-margin-y": -14 } },
  ],
  layout: { name: "preset" },
  userZoomingEnabled: false,
});

const charts = {};
for (const signal of ["rps", "error_pct", "p99_ms"]) {
  charts[signal] = new Chart(document.getElementById(`chart-${signal}`), {
    type: "line",
    data: { datasets: [] },
    options: { animation: false, parsing: false, normalized: true, responsive: true,
      elements: { point: { radius: 0 } },
      scales: { x: { type: "linear", ticks: { callback: (v) => new Date(v * 1000).toLocaleTimeString() } },
                y: { beginAtZero: true } } },
  });
}

function layoutNodes(nodes, edges) {
  // Columns by depth of calls: callers left, callees right (a mesh is mostly a DAG).
  const depth = Object.fromEntries(nodes.map((n) => [n.id, 0]));
  for (let pass = 0; pass < nodes.length; pass++) {
    for (const e of edges) depth[e.target] = Math.max(depth[e.target], depth[e.source] + 1);
  }
  const rows = {};
  return Object.fromEntries(nodes.map((n) => {
    const column = Math.min(depth[n.id], nodes.length);
    rows[column] = (rows[column] || 0) + 1;
    return [n.id, { x: 90 + column * 380, y: 70 + (rows[column] - 1) * 120 }];
  }));
}

function drawGraph(doc) {
  const positions = layoutNodes(doc.nodes, doc.edges);
  const elements = doc.nodes.map((n) => ({ group: "nodes", data: { id: n.id,
    label: `${n.id}\n${n.protocol} · ${n.versions.join(", ")}` }, position: positions[n.id] }));
  for (const e of doc.edges) {
    elements.push({ group: "edges", data: { id: e.id, source: e.source, target: e.target, label: e.label,
      colour: COLOURS[e.health], health: e.health, rps: e.rps, error_ratio: e.error_ratio, p99_ms: e.p99_ms,
      bytes_per_s: e.bytes_per_s, protocol: e.protocol } });
  }
  cy.batch(() => {
    const seen = new Set(elements.map((el) => el.data.id));
    cy.elements().filter((el) => !seen.has(el.id())).remove();
    for (const el of elements) {
      const existing = cy.getElementById(el.data.id);
      if (existing.nonempty()) { existing.data(el.data); if (el.position) existing.position(el.position); }
      else cy.add(el);
    }
  });
  cy.fit(undefined, 30);
  const body = document.querySelector("#edges tbody");
  body.innerHTML = "";
  for (const e of doc.edges) {
    const row = body.insertRow();
    row.dataset.edge = e.id;
    row.dataset.health = e.health;
    const cells = e.protocol === "tcp"
      ? [`${e.source} → ${e.target} (tcp)`, `${e.bytes_per_s.toFixed(0)} B/s sent`, "–", "–"]
      : [`${e.source} → ${e.target}`, e.rps.toFixed(1), `${(100 * e.error_ratio).toFixed(1)} %`,
         e.p99_ms === null ? "–" : `${e.p99_ms.toFixed(0)} ms`];
    cells.forEach((text, i) => { const c = row.insertCell(); c.textContent = text; if (i > 0) c.className = e.health; });
  }
  const down = Object.entries(doc.scrapes).filter(([, up]) => !up).map(([w]) => w);
  document.getElementById("scrapes").textContent = down.length
    ? `Prometheus cannot scrape: ${down.join(", ")}` : `Prometheus scrapes ${Object.keys(doc.scrapes).length} sidecars.`;
  document.getElementById("updated").textContent = `updated ${new Date(doc.time * 1000).toLocaleTimeString()}`;
  document.body.dataset.ready = "true";
}

function drawSeries(doc) {
  const services = Object.keys(doc).sort();
  for (const [signal, chart] of Object.entries(charts)) {
    chart.data.datasets = services.map((service, i) => ({ label: service, borderColor: SERIES_COLOURS[i % 6],
      backgroundColor: SERIES_COLOURS[i % 6], data: doc[service][signal].map(([x, y]) => ({ x, y })) }));
    chart.update();
  }
}

function drawStatus(doc) {
  const body = document.querySelector("#status tbody");
  body.innerHTML = "";
  if (doc.error) { document.getElementById("cp-version").textContent = doc.error; return; }
  document.getElementById("cp-version").textContent = `version ${doc.version}`;
  for (const [node, state] of Object.entries(doc.nodes || {})) {
    const row = body.insertRow();
    const synced = state.connected && state.acked && state.acked === state.target;
    const config = state.nack ? `rejected: ${state.nack}` : !state.connected ? "not connected"
      : synced ? `in sync ${state.acked.slice(0, 8)}` : `applying ${(state.target || "").slice(0, 8)}`;
    const cert = state.certificate ? new Date(state.certificate.not_after).toLocaleTimeString() : "–";
    [node, config, cert].forEach((text, i) => { const c = row.insertCell(); c.textContent = text;
      if (i === 1 && !synced) c.className = "bad"; });
  }
}

async function fetchJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  return response.json();
}

async function refresh() {
  try {
    const [graph, series, status] = await Promise.all(
      [fetchJson("/api/graph"), fetchJson("/api/series"), fetchJson("/api/status")]);
    if (!graph.error) drawGraph(graph); else document.getElementById("updated").textContent = graph.error;
    if (!series.error) drawSeries(series);
    drawStatus(status);
  } catch (error) {
    document.getElementById("updated").textContent = `dashboard server unreachable: ${error}`;
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

window.meshDashboard = { cy, charts };
refresh();
