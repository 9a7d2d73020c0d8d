// Small DOM helpers. Values are always set as text or properties, never parsed as HTML, so
// nothing from telemetry can become markup.

export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  applyProps(el, props);
  append(el, children);
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") el.textContent = String(v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function applyProps(el, props) {
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = Array.isArray(v) ? v.filter(Boolean).join(" ") : v;
    else if (k === "text") el.textContent = String(v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

// A SQL string literal: quotes doubled.
export function sqlString(value) {
  return `'${String(value).replaceAll("'", "''")}'`;
}

// Milliseconds since the epoch of an RFC 3339 string (any number of fractional digits).
export function parseTime(text) {
  if (!text) return NaN;
  const m = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$/.exec(text);
  if (!m) return Date.parse(text);
  const fraction = m[2] ? m[2].slice(0, 4) : "";
  return Date.parse(`${m[1]}${fraction}${m[3]}`);
}

const pad = (n) => String(n).padStart(2, "0");

export function formatTime(value) {
  const ms = typeof value === "number" ? value : parseTime(value);
  if (!Number.isFinite(ms)) return "";
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function formatAgo(value) {
  const ms = typeof value === "number" ? value : parseTime(value);
  if (!Number.isFinite(ms)) return "";
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function formatNumber(n, digits = 1) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  const abs = Math.abs(n);
  if (abs >= 1e9) return `${(n / 1e9).toFixed(digits)}G`;
  if (abs >= 1e6) return `${(n / 1e6).toFixed(digits)}M`;
  if (abs >= 1e4) return `${(n / 1e3).toFixed(digits)}k`;
  if (Number.isInteger(n)) return n.toLocaleString("en-US");
  return n.toFixed(abs < 10 ? 2 : digits);
}

export function formatBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export const SEVERITIES = ["critical", "high", "medium", "low", "info"];

export function severityBadge(severity) {
  return h("span", { class: ["badge", `sev-${severity}`], text: severity });
}

export function statusBadge(status, acknowledged) {
  if (status === "firing" && acknowledged) {
    return h("span", { class: "badge status-acknowledged", text: "acknowledged" });
  }
  return h("span", { class: ["badge", `status-${status}`], text: status });
}

// A message box for failures and empty states (never logged to the browser console).
export function notice(kind, ...text) {
  return h("div", { class: ["notice", `notice-${kind}`], role: kind === "error" ? "alert" : "status" }, ...text);
}

export function errorNotice(error, what) {
  const message = error && error.message ? error.message : String(error);
  return notice("error", `${what}: ${message}`);
}

// The `#/page/arg?x=y` link for a page.
export function link(page, arg, params) {
  let href = `#/${page}`;
  if (arg) href += `/${encodeURIComponent(arg)}`;
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== "") query.set(k, v);
  }
  const q = query.toString();
  return q ? `${href}?${q}` : href;
}

export function sqlLink(sql) {
  return link("sql", null, { q: sql });
}
