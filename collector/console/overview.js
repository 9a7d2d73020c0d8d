// Overview: ingest rate per service, alerts by severity, redactions by entity and the noisiest
// services over a chosen time range, from SQL over the stored tables.

import { get, query, records } from "./api.js";
import { barChart, chartBox, destroyCharts, panelHead, PALETTE, SEVERITY_COLORS, timeChart } from "./charts.js";
import { h, clear, errorNotice, formatNumber, link, parseTime, SEVERITIES } from "./dom.js";

// Time range → bucket width, both in seconds.
const RANGES = {
  "15m": { seconds: 900, bucket: 15, label: "15 minutes" },
  "1h": { seconds: 3600, bucket: 60, label: "1 hour" },
  "6h": { seconds: 6 * 3600, bucket: 300, label: "6 hours" },
  "24h": { seconds: 86400, bucket: 900, label: "24 hours" },
};
const MAX_SERVICES = 8;
const REFRESH_MS = 15000;

function telemetry(range) {
  const since = `now() - INTERVAL '${range.seconds} seconds'`;
  return `SELECT time, service FROM logs WHERE time >= ${since} UNION ALL SELECT time, service FROM spans WHERE time >= ${since}`;
}

function bucketed(range, column) {
  return `date_bin(INTERVAL '${range.bucket} seconds', ${column})`;
}

// Every bucket start of the range, in epoch seconds.
function buckets(range) {
  const now = Math.floor(Date.now() / 1000);
  const last = now - (now % range.bucket);
  const out = [];
  for (let t = last - range.seconds + range.bucket; t <= last; t += range.bucket) out.push(t);
  return out;
}

// Rows of (bucket time, key, value) into one series per key, on the range's buckets; keys beyond
// `max` (by total) are summed into `other`.
function pivot(rows, x, { max = MAX_SERVICES, scale = 1, order } = {}) {
  const index = new Map(x.map((t, i) => [t, i]));
  const byKey = new Map();
  for (const [time, key, value] of rows) {
    const t = Math.floor(parseTime(time) / 1000);
    const i = index.get(t);
    if (i === undefined) continue;
    if (!byKey.has(key)) byKey.set(key, x.map(() => 0));
    byKey.get(key)[i] += Number(value) * scale;
  }
  let keys = [...byKey.keys()];
  if (order) keys = order.filter((k) => byKey.has(k));
  else keys.sort((a, b) => total(byKey.get(b)) - total(byKey.get(a)));
  const series = keys.slice(0, max).map((k) => ({ label: k, values: byKey.get(k) }));
  const rest = keys.slice(max);
  if (rest.length) {
    const values = x.map((_, i) => rest.reduce((s, k) => s + byKey.get(k)[i], 0));
    series.push({ label: `other (${rest.length})`, values, color: "#9ca3af" });
  }
  return series;
}

const total = (values) => values.reduce((a, b) => a + b, 0);

function stat(label, value, extra, href) {
  const body = [h("div", { class: "stat-value", text: value }), h("div", { class: "stat-label", text: label }), extra];
  return href ? h("a", { class: "panel stat", href }, body) : h("div", { class: "panel stat" }, body);
}

export async function render(view, { params, current }) {
  const key = RANGES[params.get("range")] ? params.get("range") : "1h";
  const range = RANGES[key];
  const rangeSelect = h(
    "select",
    { id: "range", "aria-label": "Time range", onchange: (e) => { location.hash = link("overview", null, { range: e.target.value }); } },
    Object.entries(RANGES).map(([k, r]) => h("option", { value: k, selected: k === key }, `Last ${r.label}`)),
  );
  const updated = h("span", { class: "muted", id: "updated" });
  view.append(
    h("div", { class: "page-head" }, h("h1", { text: "Overview" }), h("div", { class: "toolbar" }, updated, rangeSelect)),
  );
  const stats = h("div", { class: "stats" });
  const charts = h("div", { class: "chart-grid" });
  const services = h("div", {});
  view.append(stats, charts, services);

  async function load() {
    const x = buckets(range);
    const since = `now() - INTERVAL '${range.seconds} seconds'`;
    const [ingest, fired, redactions, noisy, alertsBy, redactedBy, firing] = await Promise.all([
      query(`SELECT ${bucketed(range, "time")} AS t, service, count(*) AS n FROM (${telemetry(range)}) GROUP BY 1, 2 ORDER BY 1`),
      query(`SELECT ${bucketed(range, "time")} AS t, severity, count(*) AS n FROM alerts WHERE status = 'firing' AND time >= ${since} GROUP BY 1, 2 ORDER BY 1`),
      query(`SELECT ${bucketed(range, "time")} AS t, entity, sum(count) AS n FROM redactions WHERE time >= ${since} GROUP BY 1, 2 ORDER BY 1`),
      query(`SELECT service, count(*) AS records FROM (${telemetry(range)}) GROUP BY service ORDER BY records DESC LIMIT 10`),
      query(`SELECT service, count(*) AS alerts FROM alerts WHERE status = 'firing' AND time >= ${since} GROUP BY service`),
      query(`SELECT service, sum(count) AS redacted FROM redactions WHERE time >= ${since} GROUP BY service`),
      get("/api/v1/alerts?status=firing&limit=5000"),
    ]);
    if (!current()) return;
    destroyCharts(view);

    const firingBy = Object.fromEntries(SEVERITIES.map((s) => [s, 0]));
    for (const a of records(firing)) firingBy[a.severity] = (firingBy[a.severity] || 0) + 1;
    const records_ = ingest.rows.reduce((s, r) => s + Number(r[2]), 0);
    const redacted = redactions.rows.reduce((s, r) => s + Number(r[2]), 0);
    clear(stats).append(
      stat(`records in the last ${range.label}`, formatNumber(records_), h("div", { class: "muted", text: `${formatNumber(records_ / range.seconds)} per second` })),
      stat(
        "alerts firing now",
        formatNumber(firing.row_count),
        h("div", { class: "sev-row" }, SEVERITIES.filter((s) => firingBy[s]).map((s) => h("span", { class: ["badge", `sev-${s}`], text: `${firingBy[s]} ${s}` }))),
        link("alerts", null, { status: "firing" }),
      ),
      stat(`values redacted in the last ${range.label}`, formatNumber(redacted), h("div", { class: "muted", text: `${redactions.rows.length ? new Set(redactions.rows.map((r) => r[1])).size : 0} entity types` })),
      stat("services sending", formatNumber(new Set(ingest.rows.map((r) => r[1])).size), null, link("graph")),
    );

    clear(charts);
    const a = chartBox("Ingest rate per service", "records per second");
    const b = chartBox("Alerts fired by severity", `per ${range.bucket >= 60 ? `${range.bucket / 60} min` : `${range.bucket} s`}`);
    const c = chartBox("Redactions by entity", `values per ${range.bucket >= 60 ? `${range.bucket / 60} min` : `${range.bucket} s`}`);
    charts.append(a.box, b.box, c.box);
    timeChart(a.body, { x, series: pivot(ingest.rows, x, { scale: 1 / range.bucket }) });
    const bySeverity = pivot(fired.rows, x, { order: SEVERITIES.slice().reverse(), max: 5 }).map((s) => ({ ...s, color: SEVERITY_COLORS[s.label] }));
    timeChart(b.body, { x, series: bySeverity, stacked: true, empty: "No alerts fired in this time range" });
    timeChart(c.body, { x, series: pivot(redactions.rows, x).map((s, i) => ({ ...s, color: s.color || PALETTE[(i + 3) % PALETTE.length] })), empty: "Nothing redacted in this time range" });

    const alertsOf = new Map(alertsBy.rows.map((r) => [r[0], Number(r[1])]));
    const redactedOf = new Map(redactedBy.rows.map((r) => [r[0], Number(r[1])]));
    const top = noisy.rows.map(([service, n]) => ({ service, records: Number(n) }));
    const most = top.length ? top[0].records : 1;
    const table = h(
      "table",
      { class: "data noisy" },
      h("thead", {}, h("tr", {}, h("th", { text: "service" }), h("th", { class: "num", text: "records" }), h("th", { text: "" }), h("th", { class: "num", text: "alerts" }), h("th", { class: "num", text: "redacted" }))),
      h(
        "tbody",
        {},
        top.map((s) =>
          h(
            "tr",
            {},
            h("td", {}, h("a", { href: link("service", s.service), text: s.service })),
            h("td", { class: "num", text: formatNumber(s.records) }),
            h("td", { class: "bar-cell" }, h("meter", { min: 0, max: most, value: s.records, title: `${Math.round((100 * s.records) / most)}% of the noisiest` })),
            h("td", { class: "num" }, alertsOf.get(s.service) ? h("a", { href: link("alerts", null, { service: s.service, status: "all" }), text: formatNumber(alertsOf.get(s.service)) }) : "0"),
            h("td", { class: "num", text: formatNumber(redactedOf.get(s.service) || 0) }),
          ),
        ),
      ),
    );
    const e = chartBox("Records by service", `last ${range.label}`);
    const noisiest = h(
      "section",
      { class: "panel" },
      panelHead("Noisiest services", `records, alerts and redactions in the last ${range.label}`),
      top.length ? table : h("div", { class: "chart-empty", text: "No telemetry in this time range" }),
    );
    clear(services).append(h("div", { class: "chart-grid" }, noisiest, e.box));
    barChart(e.body, { labels: top.map((s) => s.service), values: top.map((s) => s.records), label: "records" });
    updated.textContent = `updated ${new Date().toLocaleTimeString()}`;
    view.dataset.loaded = key;
  }

  async function refresh() {
    try {
      await load();
    } catch (error) {
      if (current()) clear(stats).append(errorNotice(error, "Cannot load the overview"));
    }
  }
  await refresh();
  const timer = setInterval(() => {
    if (current()) refresh();
  }, REFRESH_MS);
  return () => clearInterval(timer);
}
