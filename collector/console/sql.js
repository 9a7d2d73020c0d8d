// SQL console: an editor with history, the table and column browser, a sortable paged result
// grid, a chart of the result, and CSV / NDJSON export.

import { download, query } from "./api.js";
import { barChart, destroyCharts, PALETTE, timeChart } from "./charts.js";
import { dataGrid } from "./grid.js";
import { h, clear, errorNotice, formatNumber, notice, parseTime } from "./dom.js";

const HISTORY_KEY = "vigil.sqlHistory";
const HISTORY_MAX = 50;
const DEFAULT_SQL = "SELECT service, count(*) AS records\nFROM logs\nWHERE time >= now() - INTERVAL '1 hour'\nGROUP BY service\nORDER BY records DESC";

function history() {
  try {
    const list = JSON.parse(localStorage.getItem(HISTORY_KEY) || "[]");
    return Array.isArray(list) ? list.filter((q) => typeof q === "string") : [];
  } catch {
    return [];
  }
}

function remember(sql) {
  const list = [sql, ...history().filter((q) => q !== sql)].slice(0, HISTORY_MAX);
  localStorage.setItem(HISTORY_KEY, JSON.stringify(list));
}

const isTime = (type) => /^Timestamp|^Date/.test(type || "");
const isNumber = (type) => /^(U?Int|Float|Decimal)/.test(type || "");

export async function render(view, { params, current }) {
  const initial = params.get("q") || history()[0] || DEFAULT_SQL;
  const editor = h("textarea", { id: "sql-editor", class: "editor", spellcheck: false, rows: 8, "aria-label": "SQL" });
  editor.value = initial;
  const status = h("span", { class: "muted", id: "sql-status" });
  const output = h("div", { id: "sql-output" });
  const historyList = h("ol", { class: "history", id: "sql-history" });
  const tables = h("div", { class: "tables", id: "sql-tables" });
  let last = null;

  function renderHistory() {
    clear(historyList);
    for (const q of history()) {
      historyList.append(h("li", {}, h("button", { type: "button", class: "link", title: q, onclick: () => { editor.value = q; editor.focus(); } }, q.replace(/\s+/g, " "))));
    }
    if (!historyList.firstChild) historyList.append(h("li", { class: "muted", text: "Queries you run appear here." }));
  }

  async function run() {
    const sql = editor.value.trim();
    if (!sql) return;
    status.textContent = "running…";
    destroyCharts(output);
    clear(output);
    try {
      const answer = await query(sql);
      if (!current()) return;
      remember(sql);
      renderHistory();
      last = { sql, answer };
      status.textContent = `${formatNumber(answer.row_count)} row${answer.row_count === 1 ? "" : "s"} in ${answer.elapsed_ms} ms`;
      showResult(answer);
    } catch (error) {
      if (!current()) return;
      status.textContent = "";
      output.append(errorNotice(error, "Query failed"));
    }
  }

  function showResult(answer) {
    const tableTab = h("button", { type: "button", class: "tab active", id: "tab-table" }, "Table");
    const chartTab = h("button", { type: "button", class: "tab", id: "tab-chart" }, "Chart");
    const pane = h("div", { class: "result-pane" });
    const showTable = () => {
      tableTab.classList.add("active");
      chartTab.classList.remove("active");
      destroyCharts(pane);
      clear(pane).append(answer.rows.length ? dataGrid({ columns: answer.columns, rows: answer.rows }) : notice("empty", "The query returned no rows."));
    };
    const showChart = () => {
      chartTab.classList.add("active");
      tableTab.classList.remove("active");
      clear(pane).append(chartEditor(answer));
    };
    tableTab.addEventListener("click", showTable);
    chartTab.addEventListener("click", showChart);
    output.append(
      h(
        "div",
        { class: "result-bar" },
        h("div", { class: "tabbar" }, tableTab, chartTab),
        h("div", { class: "buttons" }, h("button", { type: "button", class: "ghost", id: "export-csv", onclick: () => exportAs("csv") }, "Export CSV"), h("button", { type: "button", class: "ghost", id: "export-ndjson", onclick: () => exportAs("ndjson") }, "Export NDJSON")),
      ),
      pane,
    );
    showTable();
  }

  async function exportAs(format) {
    if (!last) return;
    try {
      const blob = await download(last.sql, format);
      const url = URL.createObjectURL(blob);
      const a = h("a", { href: url, download: `vigil-query.${format === "csv" ? "csv" : "ndjson"}` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (error) {
      output.prepend(errorNotice(error, `Cannot export ${format}`));
    }
  }

  editor.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      run();
    }
  });

  view.append(
    h("div", { class: "page-head" }, h("h1", { text: "SQL" }), h("span", { class: "muted", text: "Read-only SQL over logs, spans, alerts, alert_actions, redactions and dead_letters" })),
    h(
      "div",
      { class: "sql-layout" },
      h("aside", { class: "panel sidebar" }, h("h3", { text: "Tables" }), tables, h("h3", { text: "History" }), historyList),
      h(
        "div",
        { class: "sql-main" },
        h("div", { class: "panel" }, editor, h("div", { class: "editor-bar" }, h("button", { type: "button", class: "primary", id: "run", onclick: run }, "Run"), h("span", { class: "muted small", text: "Ctrl+Enter" }), status)),
        output,
      ),
    ),
  );
  renderHistory();
  loadTables(tables, editor, current);
  if (params.get("q")) await run();
  return null;
}

async function loadTables(container, editor, current) {
  try {
    const answer = await query("SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public' ORDER BY table_name, ordinal_position");
    if (!current()) return;
    const byTable = new Map();
    for (const [table, column, type] of answer.rows) {
      if (!byTable.has(table)) byTable.set(table, []);
      byTable.get(table).push([column, type]);
    }
    const insert = (text) => {
      const start = editor.selectionStart;
      const end = editor.selectionEnd;
      editor.setRangeText(text, start, end, "end");
      editor.focus();
    };
    for (const [table, columns] of byTable) {
      container.append(
        h(
          "details",
          { class: "table-entry", dataset: { table } },
          h("summary", {}, h("span", { text: table }), h("button", { type: "button", class: "link small", title: `Query ${table}`, onclick: (e) => { e.preventDefault(); editor.value = `SELECT *\nFROM ${table}\nORDER BY time DESC\nLIMIT 100`; editor.focus(); } }, "query")),
          h("ul", {}, columns.map(([column, type]) => h("li", {}, h("button", { type: "button", class: "link", title: `Insert ${column}`, onclick: () => insert(column) }, column), h("span", { class: "muted small", text: ` ${type}` })))),
        ),
      );
    }
  } catch (error) {
    if (current()) container.append(errorNotice(error, "Cannot list tables"));
  }
}

// Pick the columns to chart; a time or text x axis, numeric y columns, lines or bars.
function chartEditor(answer) {
  const columns = answer.columns;
  const xCandidates = columns.filter((c) => !isNumber(c.type) || isTime(c.type));
  const yCandidates = columns.filter((c) => isNumber(c.type));
  const root = h("div", { class: "chart-editor" });
  if (!answer.rows.length || !yCandidates.length) {
    root.append(notice("empty", "Charting needs rows and at least one numeric column."));
    return root;
  }
  const xSelect = h("select", { id: "chart-x" }, [...xCandidates, ...yCandidates].map((c, i) => h("option", { value: c.name, selected: i === 0 }, c.name)));
  const type = h("select", { id: "chart-type" }, h("option", { value: "line" }, "line"), h("option", { value: "bar" }, "bar"));
  const ys = yCandidates.map((c, i) => h("label", { class: "check" }, h("input", { type: "checkbox", value: c.name, checked: i === 0 }), c.name));
  const area = h("div", { class: "panel chart-body", id: "chart-area" });
  const draw = () => {
    destroyCharts(area);
    clear(area);
    const index = (name) => columns.findIndex((c) => c.name === name);
    const xi = index(xSelect.value);
    const chosen = ys.map((l) => l.querySelector("input")).filter((i) => i.checked).map((i) => index(i.value));
    if (!chosen.length) {
      area.append(notice("empty", "Choose at least one y column."));
      return;
    }
    const xType = columns[xi].type;
    if (isTime(xType)) {
      const rows = answer.rows.filter((r) => r[xi] !== null).slice().sort((a, b) => parseTime(a[xi]) - parseTime(b[xi]));
      timeChart(area, {
        x: rows.map((r) => parseTime(r[xi]) / 1000),
        series: chosen.map((yi, n) => ({ label: columns[yi].name, values: rows.map((r) => (r[yi] === null ? null : Number(r[yi]))), bars: type.value === "bar", color: PALETTE[n % PALETTE.length], points: rows.length < 60 })),
        height: 320,
      });
    } else {
      const rows = answer.rows.slice(0, 200);
      barChart(area, { labels: rows.map((r) => String(r[xi])), values: rows.map((r) => Number(r[chosen[0]])), label: columns[chosen[0]].name, height: 320 });
    }
  };
  for (const control of [xSelect, type, ...ys.map((l) => l.querySelector("input"))]) control.addEventListener("change", draw);
  root.append(
    h("div", { class: "chart-controls" }, h("label", { class: "field" }, h("span", { text: "x" }), xSelect), h("label", { class: "field" }, h("span", { text: "type" }), type), h("div", { class: "field" }, h("span", { text: "y" }), h("div", { class: "checks" }, ys))),
    area,
  );
  // Drawn once attached, so the chart has its container's width.
  requestAnimationFrame(draw);
  return root;
}
