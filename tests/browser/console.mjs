// Drives Vigil's built-in console in headless Chromium (Debian's `chromium`) the way an analyst
// uses it: every page, a SQL query with sorting, a chart and an export, an alert acknowledged
// and resolved, evidence opened. Fails on any browser console error, page error, failed request
// or HTTP error answer. Takes a screenshot of each page.
//
//   node console.mjs --url http://127.0.0.1:8080 --out DIR [--chromium /usr/bin/chromium]
//
// Started by the Rust end-to-end suite (tests/tests/e2e/console.rs) against a running `vigil demo`.

import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    out: { type: "string" },
    chromium: { type: "string", default: process.env.CHROMIUM || "/usr/bin/chromium" },
  },
});
if (!args.url || !args.out) {
  console.error("usage: node console.mjs --url http://127.0.0.1:PORT --out DIR [--chromium PATH]");
  process.exit(2);
}
const base = args.url.replace(/\/$/, "");
const WAIT = { timeout: 30000 };

const problems = [];
const passed = [];

// Flags like the ones this machine's network needs: no background connections to anywhere.
const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
  ],
});

try {
  await mkdir(args.out, { recursive: true });
  const context = await browser.newContext({
    viewport: { width: 1440, height: 900 },
    acceptDownloads: true,
    deviceScaleFactor: 1,
  });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT.timeout);
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error on ${page.url()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.push(`page error on ${page.url()}: ${e.message}`));
  page.on("requestfailed", (r) => {
    problems.push(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.request().method()} ${r.url()}`);
  });

  async function step(name, body) {
    const before = problems.length;
    try {
      await body();
    } catch (error) {
      problems.push(`${name}: ${error.message.split("\n")[0]}`);
      await page.screenshot({ path: join(args.out, `failed-${name.replace(/\W+/g, "-")}.png`), fullPage: true }).catch(() => {});
      return;
    }
    if (problems.length === before) passed.push(name);
    console.log(`${problems.length === before ? "ok  " : "FAIL"} ${name}`);
  }

  const shot = (name) => page.screenshot({ path: join(args.out, `${name}.png`), fullPage: false });
  // Lets pending fetches and chart drawing settle before a screenshot.
  const settle = () => page.waitForLoadState("networkidle");

  await step("overview", async () => {
    const response = await page.goto(`${base}/`);
    if (!page.url().startsWith(`${base}/console/`)) throw new Error(`/ did not lead to the console: ${page.url()}`);
    const index = response.headers();
    const csp = index["content-security-policy"] || "";
    for (const want of ["default-src 'self'", "frame-ancestors 'none'", "script-src 'self'", "style-src 'self'"]) {
      if (!csp.includes(want)) throw new Error(`Content-Security-Policy lacks ${want}: ${csp}`);
    }
    if (index["x-content-type-options"] !== "nosniff") throw new Error("no X-Content-Type-Options: nosniff");
    if (index["referrer-policy"] !== "no-referrer") throw new Error("no Referrer-Policy: no-referrer");
    await page.waitForFunction(() => document.querySelectorAll(".page-overview[data-loaded='1h'] .uplot").length >= 4);
    const firing = await page.locator(".page-overview a.stat").first().locator(".stat-value").textContent();
    if (!(Number(firing) > 0)) throw new Error(`the overview shows ${firing} alerts firing`);
    await page.selectOption("#range", "15m");
    await page.waitForFunction(() => document.querySelectorAll(".page-overview[data-loaded='15m'] .uplot").length >= 4);
    await settle();
    await shot("overview");
  });

  await step("sql", async () => {
    await page.goto(`${base}/console/#/sql`);
    await page.waitForSelector("#sql-tables details[data-table='redactions']");
    const sql = "SELECT service, count(*) AS records FROM spans GROUP BY service ORDER BY service";
    await page.fill("#sql-editor", sql);
    await page.press("#sql-editor", "Control+Enter");
    await page.waitForSelector("#sql-output .grid tbody tr");
    const rows = await page.locator("#sql-output .grid tbody tr").count();
    if (rows < 3) throw new Error(`expected a row per demo service, got ${rows}`);
    // Sort by records, descending: the first row then has the most.
    await page.click("#sql-output .grid th:has-text('records')");
    await page.click("#sql-output .grid th:has-text('records')");
    const counts = await page.locator("#sql-output .grid tbody tr td:nth-child(2)").allTextContents();
    const numbers = counts.map(Number);
    if (numbers.some((n, i) => i > 0 && n > numbers[i - 1])) throw new Error(`not sorted descending: ${counts}`);
    const history = await page.locator("#sql-history li").first().textContent();
    if (!history.includes("FROM spans")) throw new Error(`history does not show the query: ${history}`);

    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export-csv")]);
    const csv = await readFile(await download.path(), "utf8");
    if (!csv.startsWith("service,records\n")) throw new Error(`CSV export starts with ${JSON.stringify(csv.slice(0, 40))}`);
    const [ndjson] = await Promise.all([page.waitForEvent("download"), page.click("#export-ndjson")]);
    const first = JSON.parse((await readFile(await ndjson.path(), "utf8")).split("\n")[0]);
    if (!("service" in first && "records" in first)) throw new Error(`NDJSON export row: ${JSON.stringify(first)}`);

    const series = [
      "SELECT date_bin(INTERVAL '5 seconds', time) AS t,",
      "       count(*) AS spans,",
      "       count(DISTINCT trace_id) AS traces",
      "FROM spans",
      "WHERE time >= now() - INTERVAL '15 minutes'",
      "GROUP BY 1",
      "ORDER BY 1",
    ].join("\n");
    await page.fill("#sql-editor", series);
    await page.click("#run");
    await page.waitForSelector("#sql-status:has-text('rows')");
    await page.click("#tab-chart");
    await page.check(".chart-controls input[value='traces']");
    await page.waitForSelector("#chart-area .uplot canvas");
    await settle();
    await shot("sql");
  });

  let fingerprint = "";
  await step("alerts", async () => {
    await page.goto(`${base}/console/#/alerts`);
    await page.waitForSelector("[data-loaded] .alerts-table tbody tr");
    await page.selectOption("select[name='severity']", "high");
    await page.waitForSelector("[data-loaded*='severity=high'] .alerts-table tbody tr");
    const severities = await page.locator(".alerts-table tbody tr td:first-child").allTextContents();
    if (severities.some((s) => s.trim() !== "high")) throw new Error(`severity filter shows ${severities}`);
    await page.selectOption("select[name='severity']", "");
    await page.waitForSelector("[data-loaded]:not([data-loaded*='severity=']) .alerts-table tbody tr");
    await settle();
    await shot("alerts");
    // The leaked cloud key: firing until someone acts on it.
    const row = page.locator(".alerts-table tbody tr", { hasText: "Credential exposed" }).first();
    fingerprint = await row.getAttribute("data-fingerprint");
    await row.locator(".alert-title a").click();
    await page.waitForSelector("#acknowledge");
  });

  await step("acknowledge and resolve", async () => {
    if (!fingerprint) throw new Error("no alert was opened");
    await page.fill("#action-comment", "Rotating the key now; ticket SEC-1234");
    await page.click("#acknowledge");
    await page.waitForSelector(".flash .notice-ok:has-text('Acknowledged by anonymous')");
    await page.waitForSelector(".facts dd:has-text('Rotating the key now')");
    await page.waitForSelector(".badge.status-acknowledged");
    await settle();
    await shot("alert");
    await page.fill("#action-comment", "Key rotated");
    await page.click("#resolve");
    await page.waitForSelector(".flash .notice-ok:has-text('Resolved by anonymous')");
    await page.waitForSelector(".page-head .badge.status-resolved");
    await page.waitForSelector(".facts dd:has-text('by hand, by anonymous')");
    const timeline = await page.locator(".timeline").textContent();
    for (const want of ["fired", "acknowledged", "resolve requested", "resolved"]) {
      if (!timeline.includes(want)) throw new Error(`history lacks "${want}": ${timeline}`);
    }
  });

  await step("evidence", async () => {
    await page.click(".evidence-link >> nth=0");
    await page.waitForFunction(() => location.hash.startsWith("#/sql?q="));
    await page.waitForSelector("#sql-output .grid tbody tr");
    const text = await page.locator("#sql-output .grid").textContent();
    if (!text.includes("billing")) throw new Error("the evidence query does not show the billing record");
    if (await page.locator("#sql-output .notice-error").count()) throw new Error("the evidence query failed");
  });

  await step("service graph", async () => {
    await page.goto(`${base}/console/#/graph`);
    await page.waitForSelector("svg.graph .node");
    await page.waitForSelector("svg.graph .edge-new");
    const learned = await page.locator("svg.graph path.edge:not(.edge-new)").count();
    if (learned < 3) throw new Error(`expected the learned demo edges, got ${learned}`);
    const state = await page.locator(".grid tbody tr", { hasText: "payments-admin" }).first().textContent();
    if (!state.includes("new (alerted)")) throw new Error(`the lateral edge is not marked new: ${state}`);
    await settle();
    await shot("graph");
  });

  await step("service baselines", async () => {
    await page.goto(`${base}/console/#/service`);
    await page.waitForSelector("table.data tbody tr");
    await page.goto(`${base}/console/#/service/cart`);
    await page.waitForFunction(() => document.querySelectorAll("[data-metric]").length === 6);
    await page.waitForSelector("[data-metric='request_rate'] .uplot canvas");
    await settle();
    await shot("service");
  });

  await step("api key", async () => {
    // The key an analyst enters goes with every API request of this tab, as a Bearer token.
    await page.click("#key-button");
    await page.fill("#key-input", "console-test-key");
    const [withKey] = await Promise.all([
      page.waitForRequest((r) => r.url().includes("/api/v1/")),
      page.click("#key-save"),
    ]);
    const sent = withKey.headers().authorization;
    if (sent !== "Bearer console-test-key") throw new Error(`API request sent authorization ${sent}`);
    const stored = await page.evaluate(() => sessionStorage.getItem("vigil.apiKey"));
    if (stored !== "console-test-key") throw new Error(`session storage holds ${stored}`);
    await page.waitForLoadState("networkidle");
    await page.click("#key-button");
    await page.click("#key-clear");
    const [without] = await Promise.all([
      page.waitForRequest((r) => r.url().includes("/api/v1/")),
      page.evaluate(() => { location.hash = "#/graph"; }),
    ]);
    if (without.headers().authorization) throw new Error("a forgotten key is still sent");
    await page.waitForSelector("svg.graph .node");
  });
} finally {
  await browser.close();
}

if (problems.length) {
  console.log(`browser: ${passed.length} passed, ${problems.length} failed`);
  for (const p of problems) console.log(`  - ${p}`);
  process.exit(1);
}
console.log(`browser: ${passed.length} passed, 0 failed`);
