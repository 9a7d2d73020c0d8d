// A results grid: sortable columns, paged rows, values rendered as text.

import { h, clear, formatNumber } from "./dom.js";

function cellText(value) {
  if (value === null || value === undefined) return null;
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function compare(a, b) {
  if (a === b) return 0;
  if (a === null || a === undefined) return 1;
  if (b === null || b === undefined) return -1;
  if (typeof a === "number" && typeof b === "number") return a - b;
  return String(cellText(a)).localeCompare(String(cellText(b)), undefined, { numeric: true });
}

// columns: [{name, type}], rows: [[...]]. Answers the grid element.
export function dataGrid({ columns, rows, pageSize = 100, onCell }) {
  const state = { sort: null, desc: false, page: 0 };
  const root = h("div", { class: "grid" });
  const numeric = columns.map((c) => /^(U?Int|Float|Decimal)/.test(c.type || ""));

  function sorted() {
    if (state.sort === null) return rows;
    const i = state.sort;
    const out = rows.slice().sort((a, b) => compare(a[i], b[i]));
    return state.desc ? out.reverse() : out;
  }

  function render() {
    clear(root);
    const all = sorted();
    const pages = Math.max(1, Math.ceil(all.length / pageSize));
    state.page = Math.min(state.page, pages - 1);
    const start = state.page * pageSize;
    const visible = all.slice(start, start + pageSize);
    const head = h(
      "tr",
      {},
      columns.map((c, i) =>
        h(
          "th",
          {
            class: [numeric[i] && "num", state.sort === i && (state.desc ? "sorted-desc" : "sorted-asc")],
            scope: "col",
            title: `${c.name} (${c.type}): click to sort`,
            onclick: () => {
              if (state.sort === i) state.desc = !state.desc;
              else {
                state.sort = i;
                state.desc = false;
              }
              render();
            },
          },
          c.name,
        ),
      ),
    );
    const body = visible.map((row) =>
      h(
        "tr",
        {},
        row.map((value, i) => {
          const text = cellText(value);
          const td = h("td", { class: [numeric[i] && "num", text === null && "null"], title: text && text.length > 60 ? text : undefined }, text === null ? "null" : text);
          if (onCell) onCell(td, columns[i], value, row);
          return td;
        }),
      ),
    );
    const table = h("div", { class: "grid-scroll" }, h("table", { class: "data" }, h("thead", {}, head), h("tbody", {}, body)));
    const pager = h(
      "div",
      { class: "pager" },
      h("span", { class: "muted", text: all.length ? `rows ${formatNumber(start + 1)}–${formatNumber(start + visible.length)} of ${formatNumber(all.length)}` : "no rows" }),
      h("button", { type: "button", class: "ghost", disabled: state.page === 0, onclick: () => { state.page -= 1; render(); } }, "‹ Prev"),
      h("span", { class: "muted", text: `page ${state.page + 1} / ${pages}` }),
      h("button", { type: "button", class: "ghost", disabled: state.page >= pages - 1, onclick: () => { state.page += 1; render(); } }, "Next ›"),
    );
    root.append(table, pager);
  }

  render();
  return root;
}
