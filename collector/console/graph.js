// Service graph: the caller→callee edges the detector learned, laid out left to right by call
// depth; edges first seen after learning (new edges) stand out.

import { get } from "./api.js";
import { dataGrid } from "./grid.js";
import { h, svg, errorNotice, formatAgo, formatTime, link, notice } from "./dom.js";

const MAX_DRAWN_EDGES = 400;
const NODE_W = 150;
const NODE_H = 34;
const COL_GAP = 110;
const ROW_GAP = 22;

// Column of each node: the longest call chain reaching it (cycles cut at the node count).
function layers(nodes, edges) {
  const rank = new Map(nodes.map((n) => [n, 0]));
  for (let pass = 0; pass < nodes.length; pass += 1) {
    let changed = false;
    for (const e of edges) {
      const next = rank.get(e.caller) + 1;
      if (next > rank.get(e.callee) && next < nodes.length) {
        rank.set(e.callee, next);
        changed = true;
      }
    }
    if (!changed) break;
  }
  const columns = [];
  for (const n of nodes) {
    const r = rank.get(n);
    (columns[r] = columns[r] || []).push(n);
  }
  // One pass of ordering each column by the mean row of its callers, to untangle edges.
  const row = new Map();
  columns.forEach((col, ci) => {
    if (ci > 0) {
      const weight = (n) => {
        const callers = edges.filter((e) => e.callee === n && row.has(e.caller)).map((e) => row.get(e.caller));
        return callers.length ? callers.reduce((a, b) => a + b, 0) / callers.length : Infinity;
      };
      col.sort((a, b) => weight(a) - weight(b) || a.localeCompare(b));
    }
    col.forEach((n, i) => row.set(n, i));
  });
  return columns.filter(Boolean);
}

function draw(graph) {
  const edges = graph.edges.slice(0, MAX_DRAWN_EDGES);
  const names = new Set(graph.services.map((s) => s.service));
  for (const e of edges) {
    names.add(e.caller);
    names.add(e.callee);
  }
  const nodes = [...names].sort();
  const columns = layers(nodes, edges);
  const tallest = Math.max(...columns.map((c) => c.length), 1);
  const width = columns.length * NODE_W + (columns.length - 1) * COL_GAP + 40;
  const height = tallest * NODE_H + (tallest - 1) * ROW_GAP + 40;
  const pos = new Map();
  columns.forEach((col, ci) => {
    const offset = ((tallest - col.length) * (NODE_H + ROW_GAP)) / 2;
    col.forEach((n, ri) => pos.set(n, { x: 20 + ci * (NODE_W + COL_GAP), y: 20 + offset + ri * (NODE_H + ROW_GAP) }));
  });
  const fresh = new Set(edges.filter((e) => e.new).flatMap((e) => [e.callee]));
  const marker = (id, cls) => svg("marker", { id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: cls }));
  const lines = edges.map((e) => {
    const a = pos.get(e.caller);
    const b = pos.get(e.callee);
    const backwards = b.x <= a.x;
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    const x2 = backwards ? b.x + NODE_W / 2 : b.x;
    const y2 = backwards ? b.y + (b.y > a.y ? 0 : NODE_H) : b.y + NODE_H / 2;
    const bend = Math.max(40, Math.abs(x2 - x1) / 2);
    const cls = ["edge", e.new && "edge-new", e.alerted && "edge-alerted"].filter(Boolean).join(" ");
    return svg(
      "path",
      { d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - (backwards ? -bend : bend)},${y2} ${x2},${y2}`, class: cls, "marker-end": `url(#${e.new ? "arrow-new" : "arrow"})` },
      svg("title", { text: `${e.caller} → ${e.callee}\nfirst seen ${formatTime(e.first_seen)}${e.new ? `\nnew after learning${e.alerted ? " (alerted)" : " (allow-listed)"}` : ""}` }),
    );
  });
  const boxes = nodes.map((n) => {
    const p = pos.get(n);
    const label = n.length > 20 ? `${n.slice(0, 19)}…` : n;
    return svg(
      "a",
      { href: link("service", n), class: ["node", fresh.has(n) && "node-new"].filter(Boolean).join(" ") },
      svg("rect", { x: p.x, y: p.y, width: NODE_W, height: NODE_H, rx: 7 }),
      svg("text", { x: p.x + NODE_W / 2, y: p.y + NODE_H / 2 + 4.5, "text-anchor": "middle", text: label }),
      svg("title", { text: n }),
    );
  });
  return svg(
    "svg",
    { class: "graph", viewBox: `0 0 ${width} ${height}`, width, height, role: "img", "aria-label": "Service graph" },
    svg("defs", {}, marker("arrow", "arrow"), marker("arrow-new", "arrow-new")),
    svg("g", {}, lines),
    svg("g", {}, boxes),
  );
}

export async function render(view, { current }) {
  view.append(h("div", { class: "page-head" }, h("h1", { text: "Service graph" }), h("span", { class: "muted", text: "caller → callee, learned from spans" })));
  let graph;
  try {
    graph = await get("/api/v1/detector/graph");
  } catch (error) {
    if (current()) view.append(errorNotice(error, "Cannot load the service graph"));
    return null;
  }
  if (!current()) return null;
  if (!graph.enabled) {
    view.append(notice("empty", "The service graph is disabled (detector.graph.enabled = false)."));
    return null;
  }
  const fresh = graph.edges.filter((e) => e.new);
  const state = graph.learning
    ? graph.learning_until
      ? `Learning until ${formatTime(graph.learning_until)}: edges seen until then are normal.`
      : "Learning starts with the first batch of spans."
    : `Learning ended ${formatAgo(graph.learning_until)}; new edges raise alerts.`;
  view.append(
    h(
      "div",
      { class: "stats" },
      h("div", { class: "panel stat" }, h("div", { class: "stat-value", text: String(graph.services.length) }), h("div", { class: "stat-label", text: "services" })),
      h("div", { class: "panel stat" }, h("div", { class: "stat-value", text: String(graph.edges.length) }), h("div", { class: "stat-label", text: "learned edges" })),
      h("a", { class: "panel stat", href: link("alerts", null, { rule: "graph.new_edge", status: "all", since: "7d" }) }, h("div", { class: ["stat-value", fresh.length && "text-new"], text: String(fresh.length) }), h("div", { class: "stat-label", text: "new edges since learning" })),
      h("div", { class: "panel stat" }, h("div", { class: "stat-label", text: state })),
    ),
  );
  if (!graph.edges.length && !graph.services.length) {
    view.append(notice("empty", "No calls between services seen yet. Spans with a CLIENT kind and peer.service, or parent/child spans across services, make edges."));
    return null;
  }
  view.append(
    h(
      "section",
      { class: "panel" },
      h("div", { class: "legend" }, h("span", { class: "key key-edge" }), "learned edge", h("span", { class: "key key-new" }), "new edge (after learning)", h("span", { class: "muted", text: graph.edges.length > MAX_DRAWN_EDGES ? ` · drawing the first ${MAX_DRAWN_EDGES} of ${graph.edges.length} edges` : "" })),
      h("div", { class: "graph-scroll" }, draw(graph)),
    ),
  );
  const rows = graph.edges
    .slice()
    .sort((a, b) => Number(b.new) - Number(a.new) || b.first_seen.localeCompare(a.first_seen))
    .map((e) => [e.caller, e.callee, e.first_seen, e.new ? (e.alerted ? "new (alerted)" : "new (allow-listed)") : "learned"]);
  view.append(
    h(
      "section",
      { class: "panel" },
      h("h3", { text: "Edges" }),
      dataGrid({
        columns: [{ name: "caller", type: "Utf8" }, { name: "callee", type: "Utf8" }, { name: "first seen", type: "Timestamp" }, { name: "state", type: "Utf8" }],
        rows,
        pageSize: 50,
        onCell: (td, column, value) => {
          if (column.name === "state" && value !== "learned") td.classList.add("text-new");
        },
      }),
    ),
  );
  return null;
}
