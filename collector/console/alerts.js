// Alerts: the triage list with filters, and one alert's detail with its evidence, history and
// the acknowledge / resolve actions.

import { get, post, query, records } from "./api.js";
import {
  h, clear, errorNotice, formatAgo, formatTime, link, notice, parseTime, SEVERITIES,
  severityBadge, sqlLink, sqlString, statusBadge,
} from "./dom.js";

const FINGERPRINT = /^[0-9a-f]{16}$/;
const STATUSES = [
  ["all", "Any status"],
  ["firing", "Firing"],
  ["unacknowledged", "Firing, not acknowledged"],
  ["acknowledged", "Firing, acknowledged"],
  ["resolved", "Resolved"],
];
const SINCE = [["1h", "Last hour"], ["6h", "Last 6 hours"], ["24h", "Last 24 hours"], ["7d", "Last 7 days"]];

export async function render(view, context) {
  if (context.arg) return detail(view, context.arg, context);
  return list(view, context);
}

async function list(view, { params, current }) {
  const filters = {
    status: params.get("status") || "firing",
    severity: params.get("severity") || "",
    rule: params.get("rule") || "",
    service: params.get("service") || "",
    since: params.get("since") || "24h",
  };
  const go = (change) => {
    location.hash = link("alerts", null, { ...filters, ...change });
  };
  const select = (name, options, label) =>
    h("label", { class: "field" }, h("span", { text: label }), h(
      "select",
      { name, onchange: (e) => go({ [name]: e.target.value }) },
      options.map(([value, text]) => h("option", { value, selected: value === filters[name] }, text)),
    ));
  const text = (name, label, placeholder) => {
    const input = h("input", { type: "search", name, value: filters[name], placeholder, list: `${name}-options` });
    input.addEventListener("change", () => go({ [name]: input.value.trim() }));
    return h("label", { class: "field" }, h("span", { text: label }), input, h("datalist", { id: `${name}-options` }));
  };
  view.append(
    h("div", { class: "page-head" }, h("h1", { text: "Alerts" }), h("span", { class: "muted", id: "alert-count" })),
    h(
      "div",
      { class: "filters panel" },
      select("status", STATUSES, "Status"),
      select("severity", [["", "Any severity"], ...SEVERITIES.map((s) => [s, s])], "Severity"),
      text("rule", "Rule", "rule id"),
      text("service", "Service", "service name"),
      select("since", SINCE, "Active in"),
    ),
  );
  const results = h("div", { class: "panel" });
  view.append(results);
  const search = new URLSearchParams(Object.entries(filters).filter(([, v]) => v)).toString();
  let answer;
  try {
    answer = await get(`/api/v1/alerts?${search}`);
  } catch (error) {
    if (current()) results.append(errorNotice(error, "Cannot list alerts"));
    return null;
  }
  if (!current()) return null;
  // Which filters the shown list answers (for bookmarks and tests alike).
  results.dataset.loaded = search;
  const alerts = records(answer);
  document.getElementById("alert-count").textContent = `${alerts.length} alert${alerts.length === 1 ? "" : "s"}`;
  for (const [name, key] of [["rule", "rule_id"], ["service", "service"]]) {
    const options = document.getElementById(`${name}-options`);
    for (const value of [...new Set(alerts.map((a) => a[key]))].sort()) options.append(h("option", { value }));
  }
  if (!alerts.length) {
    results.append(notice("empty", "No alerts match these filters."));
    return null;
  }
  results.append(
    h(
      "table",
      { class: "data alerts-table" },
      h("thead", {}, h("tr", {}, ["severity", "status", "alert", "service", "started", "last activity", "acknowledged by"].map((c) => h("th", { text: c })))),
      h(
        "tbody",
        {},
        alerts.map((a) =>
          h(
            "tr",
            { class: "clickable", dataset: { fingerprint: a.fingerprint }, onclick: () => { location.hash = link("alerts", a.fingerprint); } },
            h("td", {}, severityBadge(a.severity)),
            h("td", {}, statusBadge(a.status, a.acknowledged_by)),
            h("td", { class: "alert-title" }, h("a", { href: link("alerts", a.fingerprint), text: a.rule_title }), h("div", { class: "muted summary", text: a.summary })),
            h("td", { text: a.service }),
            h("td", { title: formatTime(a.started), text: formatAgo(a.started) }),
            h("td", { title: formatTime(a.resolved_time || a.last_seen), text: formatAgo(a.resolved_time || a.last_seen) }),
            h("td", {}, a.acknowledged_by ? h("span", { title: a.acknowledge_comment || "", text: `${a.acknowledged_by} · ${formatAgo(a.acknowledged_time)}` }) : h("span", { class: "muted", text: "–" })),
          ),
        ),
      ),
    ),
  );
  return null;
}

// SQL that finds the records behind an alert: its sample records by trace id, else the
// service's records around the alert's time.
export function evidenceQueries(alert) {
  const details = alert.details || {};
  const samples = Array.isArray(details.samples) ? details.samples : [];
  const out = [];
  for (const signal of ["logs", "spans"]) {
    const traces = [...new Set(samples.filter((s) => s.signal === signal && s.trace_id).map((s) => s.trace_id))];
    if (traces.length) {
      out.push({
        label: `${signal} of the ${traces.length} sample trace${traces.length === 1 ? "" : "s"}`,
        sql: `SELECT * FROM ${signal} WHERE trace_id IN (${traces.map(sqlString).join(", ")}) ORDER BY time LIMIT 500`,
      });
    }
  }
  const from = Number.isFinite(details.first_evidence_ns) && details.first_evidence_ns > 0
    ? new Date(details.first_evidence_ns / 1e6).toISOString()
    : alert.started;
  const to = alert.resolved_time || alert.last_seen || alert.started;
  const window = (signal) =>
    `SELECT * FROM ${signal} WHERE service = ${sqlString(alert.service)} AND time BETWEEN to_timestamp(${sqlString(from)}) - INTERVAL '5 minutes' AND to_timestamp(${sqlString(to)}) + INTERVAL '1 minute' ORDER BY time DESC LIMIT 500`;
  const signals = [...new Set(samples.map((s) => s.signal))].filter((s) => s === "logs" || s === "spans");
  for (const signal of signals.length ? signals : ["logs", "spans"]) {
    out.push({ label: `${signal} of ${alert.service} around the alert`, sql: window(signal) });
  }
  return out;
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").map(([k, v]) => [h("dt", { text: k }), h("dd", {}, v)]));
}

async function detail(view, fingerprint, { current }) {
  view.append(h("p", {}, h("a", { href: link("alerts"), text: "← All alerts" })));
  if (!FINGERPRINT.test(fingerprint)) {
    view.append(notice("error", "An alert fingerprint is 16 lower-case hex digits."));
    return null;
  }
  const flash = h("div", { class: "flash", role: "status" });
  const body = h("div", { class: "alert-detail" });
  view.append(flash, body);

  async function load() {
    const [changes, actions] = await Promise.all([
      get(`/api/v1/alerts/${fingerprint}`),
      query(`SELECT time, action, principal, comment FROM alert_actions WHERE fingerprint = ${sqlString(fingerprint)} ORDER BY time`),
    ]);
    if (!current()) return;
    clear(body);
    const rows = records(changes);
    if (!rows.length) {
      body.append(notice("empty", `No alert with fingerprint ${fingerprint}.`));
      return;
    }
    // The latest state: the resolution of an episode after its firing row.
    const latest = rows.reduce((a, b) => {
      const ka = [parseTime(a.time), a.resolved_time ? 1 : 0];
      const kb = [parseTime(b.time), b.resolved_time ? 1 : 0];
      return kb[0] > ka[0] || (kb[0] === ka[0] && kb[1] >= ka[1]) ? b : a;
    });
    let details = {};
    try {
      details = JSON.parse(latest.details || "{}");
    } catch {
      details = { raw: latest.details };
    }
    const alert = { ...latest, details };
    const acts = records(actions);
    const lastAck = acts.filter((a) => a.action === "acknowledge" && parseTime(a.time) >= parseTime(alert.time)).pop();
    const firing = alert.status === "firing";

    body.append(
      h(
        "div",
        { class: "page-head" },
        h("h1", {}, severityBadge(alert.severity), " ", alert.rule_title),
        h("div", { class: "toolbar" }, statusBadge(alert.status, firing && lastAck)),
      ),
      h("p", { class: "summary-line", text: alert.summary }),
    );

    const group = details.group && typeof details.group === "object" ? Object.entries(details.group) : [];
    const resolution = details.resolution && details.resolution.manual ? `by hand, by ${details.resolution.by}` : "";
    const info = h(
      "section",
      { class: "panel" },
      h("h3", { text: "Alert" }),
      facts([
        ["rule", h("a", { href: link("alerts", null, { rule: alert.rule_id, status: "all", since: "7d" }), text: alert.rule_id })],
        ["service", h("a", { href: link("service", alert.service), text: alert.service })],
        ["fingerprint", h("code", { text: alert.fingerprint })],
        ["started", formatTime(alert.time)],
        ["last seen", formatTime(alert.last_seen)],
        ["resolved", alert.resolved_time ? `${formatTime(alert.resolved_time)}${resolution ? ` (${resolution})` : ""}` : ""],
        ["observations", String(alert.count)],
        ...group.map(([k, v]) => [k, String(v)]),
        ["acknowledged", lastAck ? `${lastAck.principal}, ${formatTime(lastAck.time)}${lastAck.comment ? ` — “${lastAck.comment}”` : ""}` : ""],
      ]),
    );

    const evidence = h(
      "section",
      { class: "panel" },
      h("h3", { text: "Evidence" }),
      h("ul", { class: "evidence-links" }, evidenceQueries(alert).map((q) => h("li", {}, h("a", { class: "evidence-link", href: sqlLink(q.sql), text: `Open ${q.label} in SQL` })))),
      Array.isArray(details.samples) && details.samples.length
        ? h(
          "table",
          { class: "data compact" },
          h("thead", {}, h("tr", {}, ["sample", "time", "trace id", "span id"].map((c) => h("th", { text: c })))),
          h("tbody", {}, details.samples.map((s) => h("tr", {}, h("td", { text: s.signal }), h("td", { text: formatTime(s.time_ns / 1e6) }), h("td", {}, h("code", { text: s.trace_id || "–" })), h("td", {}, h("code", { text: s.span_id || "–" }))))),
        )
        : null,
      h("details", {}, h("summary", { text: "details (JSON)" }), h("pre", { class: "json", text: JSON.stringify(details, null, 2) })),
    );

    const comment = h("textarea", { id: "action-comment", rows: 3, maxlength: 2000, placeholder: "Comment (optional): what you found, ticket number…" });
    const act = (action) => async (e) => {
      const buttons = e.target.closest(".actions").querySelectorAll("button");
      for (const b of buttons) b.disabled = true;
      clear(flash);
      try {
        const text = comment.value.trim();
        const done = await post(`/api/v1/alerts/${fingerprint}/${action}`, text ? { comment: text } : {});
        if (!current()) return;
        await load();
        clear(flash).append(notice("ok", `${action === "resolve" ? "Resolved" : "Acknowledged"} by ${done.principal} at ${formatTime(done.time)}.`));
      } catch (error) {
        if (!current()) return;
        for (const b of buttons) b.disabled = false;
        flash.append(errorNotice(error, `Cannot ${action}`));
      }
    };
    const actionsPanel = h(
      "section",
      { class: "panel actions" },
      h("h3", { text: "Triage" }),
      firing
        ? [
          comment,
          h(
            "div",
            { class: "buttons" },
            h("button", { type: "button", id: "acknowledge", class: "primary", onclick: act("acknowledge") }, lastAck ? "Acknowledge again" : "Acknowledge"),
            h("button", { type: "button", id: "resolve", class: "danger", onclick: act("resolve") }, "Resolve"),
          ),
          h("p", { class: "muted small", text: "Resolving ends the alert now: the alerts table gets a resolved row and webhook sinks a resolved notification. If the condition persists it fires again after the suppression window." }),
        ]
        : h("p", { class: "muted", text: "This alert is resolved." }),
    );

    const timeline = [
      ...rows.map((r) => ({ t: parseTime(r.resolved_time || r.time), what: r.status === "resolved" ? "resolved" : "fired", who: "", comment: "" })),
      ...acts.map((a) => ({ t: parseTime(a.time), what: a.action === "resolve" ? "resolve requested" : "acknowledged", who: a.principal, comment: a.comment || "" })),
    ].sort((a, b) => a.t - b.t);
    const history = h(
      "section",
      { class: "panel" },
      h("h3", { text: "History" }),
      h("ol", { class: "timeline" }, timeline.map((e) => h("li", {}, h("time", { text: formatTime(e.t) }), h("strong", { text: ` ${e.what}` }), e.who ? ` by ${e.who}` : "", e.comment ? h("div", { class: "muted", text: `“${e.comment}”` }) : null))),
    );

    body.append(h("div", { class: "detail-grid" }, h("div", {}, info, evidence), h("div", {}, actionsPanel, history)));
  }

  try {
    await load();
  } catch (error) {
    if (current()) body.append(errorNotice(error, "Cannot load the alert"));
  }
  return null;
}
