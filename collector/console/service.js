// Per-service view: for each baseline metric of a service, what the detector expected against
// what it observed, bucket by bucket, and which buckets were anomalous.

import { get } from "./api.js";
import { chartBox, timeChart } from "./charts.js";
import { h, errorNotice, formatAgo, formatBytes, formatNumber, link, notice, parseTime, sqlLink, sqlString } from "./dom.js";

const TITLES = {
  request_rate: "Requests",
  error_rate: "Errors",
  auth_failures: "Authentication failures",
  latency_p95: "Latency p95",
  bytes: "Bytes transferred",
  source_addresses: "Distinct source addresses",
};

// Values in the metric's display unit.
function scaleOf(unit) {
  if (unit === "ns") return { factor: 1e-6, format: (v) => `${formatNumber(v)} ms` };
  if (unit === "bytes") return { factor: 1, format: formatBytes };
  return { factor: 1, format: (v) => formatNumber(v) };
}

function metricPanel(metric, zThreshold, bucketSeconds) {
  const { factor, format } = scaleOf(metric.unit);
  const scaled = (v) => (v === null || v === undefined ? null : v * factor);
  const state = metric.firing
    ? h("span", { class: "badge sev-high", text: `firing: ${metric.firing}` })
    : metric.warming_up
      ? h("span", { class: "badge status-learning", text: `learning ${metric.learned_buckets}` })
      : h("span", { class: "badge status-ok", text: "normal" });
  const last = metric.last;
  const caption = last
    ? `last bucket ${format(scaled(last.observed))}${last.expected !== null ? `, expected ${format(scaled(last.expected))}` : ""}${last.score !== null ? ` (score ${last.score.toFixed(1)})` : ""}`
    : "no closed bucket yet";
  const { box, body } = chartBox(TITLES[metric.metric] || metric.metric, `per ${bucketSeconds} s bucket`);
  box.dataset.metric = metric.metric;
  box.querySelector(".panel-head").append(state);
  box.append(h("div", { class: "muted small caption", text: caption }));
  const points = metric.history;
  const x = points.map((p) => parseTime(p.time) / 1000);
  const upper = points.map((p) => (p.expected === null || p.spread === null || p.warmup ? null : scaled(p.expected + zThreshold * p.spread)));
  const series = [
    { label: "observed", values: points.map((p) => scaled(p.observed)), color: "#2563eb", width: 2, points: true },
    { label: "expected", values: points.map((p) => scaled(p.expected)), color: "#059669", dash: [6, 4] },
    { label: `alert threshold (${zThreshold}σ)`, values: upper, color: "#d97706", dash: [2, 4], width: 1 },
    { label: "anomalous", values: points.map((p) => (p.anomaly ? scaled(p.observed) : null)), color: "#dc2626", width: 0, points: { show: true, size: 9, fill: "#dc2626" } },
  ];
  return { box, draw: () => timeChart(body, { x, series, height: 190, yFormat: (v) => format(v), empty: "No closed buckets yet" }) };
}

export async function render(view, { arg, current }) {
  view.append(h("div", { class: "page-head" }, h("h1", { text: arg ? `Service ${arg}` : "Services" }), h("span", { class: "muted", text: "baselines learned per service: expected against observed" })));
  let all;
  try {
    all = await get("/api/v1/detector/baselines");
  } catch (error) {
    if (current()) view.append(errorNotice(error, "Cannot load baselines"));
    return null;
  }
  if (!current()) return null;
  if (!all.enabled) {
    view.append(notice("empty", "Baselines are disabled (detector.baselines.enabled = false)."));
    return null;
  }
  const names = all.services.map((s) => s.service);
  const picker = h(
    "select",
    { id: "service-select", "aria-label": "Service", onchange: (e) => { location.hash = link("service", e.target.value); } },
    h("option", { value: "", text: "Choose a service…" }),
    names.map((n) => h("option", { value: n, selected: n === arg }, n)),
  );
  view.querySelector(".page-head").append(picker);
  if (!arg) {
    if (!names.length) {
      view.append(notice("empty", "No service has sent logs or spans since Vigil started."));
      return null;
    }
    view.append(
      h(
        "section",
        { class: "panel" },
        h(
          "table",
          { class: "data" },
          h("thead", {}, h("tr", {}, h("th", { text: "service" }), h("th", { text: "last seen" }), h("th", { text: "firing" }), h("th", { text: "learning" }))),
          h(
            "tbody",
            {},
            all.services.map((s) =>
              h(
                "tr",
                { class: "clickable", onclick: () => { location.hash = link("service", s.service); } },
                h("td", {}, h("a", { href: link("service", s.service), text: s.service })),
                h("td", { text: formatAgo(s.last_seen) }),
                h("td", {}, s.metrics.filter((m) => m.firing).map((m) => h("span", { class: "badge sev-high", text: TITLES[m.metric] || m.metric }))),
                h("td", { text: s.metrics.some((m) => m.warming_up) ? `${Math.min(...s.metrics.map((m) => m.learned_buckets))} / ${all.warmup_buckets} buckets` : "done" }),
              ),
            ),
          ),
        ),
      ),
    );
    return null;
  }
  let one;
  try {
    one = await get(`/api/v1/detector/baselines?service=${encodeURIComponent(arg)}`);
  } catch (error) {
    if (current()) view.append(error.status === 404 ? notice("empty", error.message) : errorNotice(error, "Cannot load the service's baselines"));
    return null;
  }
  if (!current()) return null;
  const s = one.services[0];
  view.append(
    h(
      "p",
      { class: "links" },
      `Last record ${formatAgo(s.last_seen)} · `,
      h("a", { href: link("alerts", null, { service: s.service, status: "all", since: "24h" }), text: "alerts of this service" }),
      " · ",
      h("a", { href: sqlLink(`SELECT time, severity_text, body FROM logs WHERE service = ${sqlString(s.service)} ORDER BY time DESC LIMIT 100`), text: "recent logs" }),
      " · ",
      h("a", { href: sqlLink(`SELECT time, name, kind, status_code, duration_ns FROM spans WHERE service = ${sqlString(s.service)} ORDER BY time DESC LIMIT 100`), text: "recent spans" }),
    ),
  );
  const grid = h("div", { class: "chart-grid metrics" });
  view.append(grid);
  const panels = s.metrics.map((m) => metricPanel(m, one.z_threshold, one.bucket_seconds));
  for (const p of panels) grid.append(p.box);
  for (const p of panels) p.draw();
  return null;
}
