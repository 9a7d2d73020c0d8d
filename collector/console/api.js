// Talking to Vigil's API: every request carries the analyst's API key (kept in this tab's
// session storage) as a Bearer token; a 401 asks for a key and retries once.

const KEY_STORAGE = "vigil.apiKey";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) {
    sessionStorage.setItem(KEY_STORAGE, key);
  } else {
    sessionStorage.removeItem(KEY_STORAGE);
  }
}

// Set by the app: shows the key dialog, resolves true when a key was entered.
let promptForKey = async () => false;
let pendingPrompt = null;

export function onKeyNeeded(prompt) {
  promptForKey = prompt;
}

function askForKey(reason) {
  if (!pendingPrompt) {
    pendingPrompt = promptForKey(reason).finally(() => {
      pendingPrompt = null;
    });
  }
  return pendingPrompt;
}

async function send(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  return fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
    credentials: "same-origin",
  });
}

async function errorOf(response) {
  let message = "";
  try {
    const body = await response.json();
    message = body && body.error ? String(body.error) : "";
  } catch {
    message = "";
  }
  return new ApiError(response.status, message || `${response.status} ${response.statusText}`);
}

// Sends a request; answers the parsed JSON, or the Response itself with `raw`.
export async function request(method, path, body, { raw = false } = {}) {
  let response = await send(method, path, body);
  if (response.status === 401) {
    const reason = apiKey()
      ? "Vigil refused the API key of this tab. Enter another one."
      : "Vigil needs an API key for this request.";
    if (await askForKey(reason)) {
      response = await send(method, path, body);
    }
  }
  if (!response.ok) throw await errorOf(response);
  return raw ? response : response.json();
}

export function get(path) {
  return request("GET", path);
}

export function post(path, body) {
  return request("POST", path, body);
}

// Runs SQL; JSON answers are `{columns, rows, row_count, elapsed_ms}`.
export function query(sql) {
  return request("POST", "/api/v1/query", { sql, format: "json" });
}

// Runs SQL for a download (`csv` or `ndjson`): answers a Blob.
export async function download(sql, format) {
  const response = await request("POST", "/api/v1/query", { sql, format }, { raw: true });
  return response.blob();
}

// Rows of a JSON answer as objects keyed by column name.
export function records(answer) {
  const names = answer.columns.map((c) => c.name);
  return answer.rows.map((row) => Object.fromEntries(names.map((n, i) => [n, row[i]])));
}
