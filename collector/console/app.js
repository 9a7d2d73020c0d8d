// The console's shell: hash routing between pages, the navigation, and the API key dialog.

import { apiKey, onKeyNeeded, setApiKey } from "./api.js";
import { destroyCharts } from "./charts.js";
import { clear, h } from "./dom.js";
import * as overview from "./overview.js";
import * as alerts from "./alerts.js";
import * as sql from "./sql.js";
import * as graph from "./graph.js";
import * as service from "./service.js";

const PAGES = { overview, alerts, sql, graph, service };

const main = document.getElementById("main");
let cleanup = null;
let generation = 0;

// `#/page/arg?x=y` → {page, arg, params}.
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split(/\?(.*)/s);
  const [page, ...rest] = path.split("/");
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : "";
  return { page: PAGES[page] ? page : "overview", arg, params: new URLSearchParams(query) };
}

async function show() {
  const { page, arg, params } = route();
  generation += 1;
  const mine = generation;
  if (cleanup) cleanup();
  cleanup = null;
  destroyCharts();
  clear(main);
  for (const a of document.querySelectorAll("nav.tabs a")) {
    a.classList.toggle("active", a.dataset.page === page);
  }
  document.title = `Vigil · ${page}`;
  const view = h("div", { class: `page page-${page}` });
  main.append(view);
  // A page is told whether it is still shown, so late answers are dropped.
  const current = () => mine === generation;
  const stop = await PAGES[page].render(view, { arg, params, current });
  if (current()) cleanup = typeof stop === "function" ? stop : null;
  else if (typeof stop === "function") stop();
}

// The key dialog: resolves true when a key was entered.
const dialog = document.getElementById("key-dialog");
const input = document.getElementById("key-input");
const reason = document.getElementById("key-reason");
let answer = null;

function openKeyDialog(why) {
  reason.textContent = why || "Enter the API key to use in this tab. It is kept in session storage only and sent as a Bearer token.";
  input.value = apiKey();
  dialog.showModal();
  input.focus();
  return new Promise((resolve) => {
    answer = resolve;
  });
}

function closeKeyDialog(entered) {
  if (dialog.open) dialog.close();
  const done = answer;
  answer = null;
  if (done) done(entered);
  updateKeyButton();
}

function updateKeyButton() {
  const button = document.getElementById("key-button");
  button.textContent = apiKey() ? "API key ✓" : "API key";
}

document.getElementById("key-save").addEventListener("click", () => {
  const key = input.value.trim();
  setApiKey(key);
  closeKeyDialog(Boolean(key));
});
document.getElementById("key-clear").addEventListener("click", () => {
  setApiKey("");
  input.value = "";
  closeKeyDialog(false);
});
document.getElementById("key-cancel").addEventListener("click", () => closeKeyDialog(false));
input.addEventListener("keydown", (e) => {
  if (e.key === "Enter") document.getElementById("key-save").click();
});
dialog.addEventListener("cancel", () => closeKeyDialog(false));
document.getElementById("key-button").addEventListener("click", async () => {
  if (await openKeyDialog()) show();
});

onKeyNeeded(openKeyDialog);
updateKeyButton();
window.addEventListener("hashchange", show);
show();
