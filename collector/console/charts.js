// Charts on uPlot (vendored, MIT): time series and categorical bars that size themselves to
// their container.

import { h, formatNumber } from "./dom.js";

export const PALETTE = [
  "#2563eb", "#059669", "#d97706", "#7c3aed", "#db2777",
  "#0891b2", "#65a30d", "#dc2626", "#4b5563", "#9333ea",
];

export const SEVERITY_COLORS = {
  critical: "#b91c1c",
  high: "#ea580c",
  medium: "#ca8a04",
  low: "#2563eb",
  info: "#6b7280",
};

const live = new Set();

// Charts follow their container's width.
const resizer = new ResizeObserver((entries) => {
  for (const entry of entries) {
    const chart = entry.target.uplot;
    if (!chart) continue;
    const width = Math.floor(entry.contentRect.width);
    if (width > 0 && Math.abs(width - chart.width) > 1) {
      chart.setSize({ width, height: chart.height });
    }
  }
});

function mount(container, opts, data) {
  const width = Math.max(container.clientWidth || 0, 280);
  const chart = new uPlot({ ...opts, width }, data, container);
  container.uplot = chart;
  live.add(chart);
  resizer.observe(container);
  return chart;
}

// Frees the charts inside `scope` (every chart without one) before their DOM goes.
export function destroyCharts(scope) {
  for (const chart of [...live]) {
    if (scope && !scope.contains(chart.root)) continue;
    if (chart.root && chart.root.parentElement) resizer.unobserve(chart.root.parentElement);
    chart.destroy();
    live.delete(chart);
  }
}

export function panelHead(title, subtitle) {
  return h("header", { class: "panel-head" }, h("h3", { text: title }), subtitle ? h("span", { class: "muted", text: subtitle }) : null);
}

export function chartBox(title, subtitle) {
  const body = h("div", { class: "chart-body" });
  const box = h("section", { class: "panel chart" }, panelHead(title, subtitle), body);
  return { box, body };
}

// x: epoch seconds; series: [{label, values, color, dash, width, points, bars}].
// `stacked`: values are drawn as stacked bars (legend shows each series' own value).
export function timeChart(container, { x, series, height = 220, stacked = false, yFormat = formatNumber, empty }) {
  if (!x.length || series.length === 0) {
    container.append(h("div", { class: "chart-empty", text: empty || "No data in this time range" }));
    return null;
  }
  let data = [x, ...series.map((s) => s.values)];
  let raw = null;
  if (stacked) {
    // Cumulative sums, drawn largest first so each bar shows its own band.
    raw = series.map((s) => s.values);
    const sums = [];
    let acc = x.map(() => 0);
    for (const s of series) {
      acc = acc.map((v, i) => v + (s.values[i] || 0));
      sums.push(acc);
    }
    data = [x, ...sums.slice().reverse()];
    series = series.slice().reverse();
    raw = raw.slice().reverse();
  }
  const bars = uPlot.paths.bars({ size: [0.7, 60], align: 0 });
  const opts = {
    height,
    cursor: { points: { size: 6 }, drag: { x: false, y: false } },
    legend: { live: true },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    axes: [
      { stroke: "#6b7280", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#e5e7eb" } },
      { stroke: "#6b7280", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#e5e7eb" }, size: 56, values: (u, ticks) => ticks.map((t) => yFormat(t)) },
    ],
    series: [
      {},
      ...series.map((s, i) => ({
        label: s.label,
        stroke: s.color || PALETTE[i % PALETTE.length],
        fill: stacked || s.bars ? s.color || PALETTE[i % PALETTE.length] : undefined,
        width: s.width || (stacked ? 0 : 1.75),
        dash: s.dash,
        paths: stacked || s.bars ? bars : undefined,
        points: typeof s.points === "object" ? s.points : { show: Boolean(s.points) },
        value: stacked ? (u, v, si, idx) => (idx === null || idx === undefined ? "–" : yFormat(raw[si - 1][idx] || 0)) : (u, v) => (v === null || v === undefined ? "–" : yFormat(v)),
      })),
    ],
  };
  return mount(container, opts, data);
}

// Categorical bars: labels along x, one value each.
export function barChart(container, { labels, values, label, color = PALETTE[0], height = 220, yFormat = formatNumber }) {
  if (!labels.length) {
    container.append(h("div", { class: "chart-empty", text: "No data" }));
    return null;
  }
  const x = labels.map((_, i) => i);
  const opts = {
    height,
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: false, range: [-0.5, labels.length - 0.5] }, y: { range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] } },
    axes: [
      { stroke: "#6b7280", grid: { show: false }, splits: () => x, values: (u, ticks) => ticks.map((t) => truncate(labels[t], 14)), rotate: labels.length > 8 ? -30 : 0, size: labels.length > 8 ? 60 : 40 },
      { stroke: "#6b7280", grid: { stroke: "#eef0f3" }, size: 56, values: (u, ticks) => ticks.map((t) => yFormat(t)) },
    ],
    series: [
      { label: "", value: (u, v) => (v === null || v === undefined ? "–" : labels[v]) },
      { label, stroke: color, fill: color, width: 0, paths: uPlot.paths.bars({ size: [0.7, 80] }), points: { show: false }, value: (u, v) => (v === null || v === undefined ? "–" : yFormat(v)) },
    ],
  };
  return mount(container, opts, [x, values]);
}

function truncate(text, n) {
  const s = String(text ?? "");
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}
