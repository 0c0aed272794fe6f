// The index page: the new-run form (POST /api/runs, errors next to their
// field), the engines panel and the runs table, kept live from GET /api/events.

import { formatAbsolute, formatDuration, formatRelative, h, shellJoin } from "./format.js";
import { csrfHeaders, signInAgain } from "./csrf.js";
import { EngineList, engineFacts, engineRow, enginesSummary } from "./engines.js";
import { pageVocabulary } from "./vocabulary.js";

const $ = (id) => document.getElementById(id);
const vocab = pageVocabulary();
const { isActive, statusLabel } = vocab;

function setText(el, text) {
  if (el && el.textContent !== text) el.textContent = text;
}

// -- the form ---------------------------------------------------------------------------

const form = $("run-form");
const formError = $("form-error");
const busy = $("form-busy");
const submit = $("start-run");

function clearErrors() {
  formError.hidden = true;
  formError.textContent = "";
  for (const el of form.querySelectorAll(".field-error")) {
    el.hidden = true;
    el.textContent = "";
  }
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  for (const el of form.querySelectorAll(".field.invalid")) el.classList.remove("invalid");
}

// Show `message` next to the field the API named ("env", "registry_auth.username", ...).
function showFieldError(field, message) {
  const name = String(field || "").split(".")[0];
  const box = name && document.getElementById(`f-${name}-error`);
  if (!box) return false;
  box.textContent = box.textContent ? `${box.textContent}; ${message}` : message;
  box.hidden = false;
  const container = box.closest(".field");
  if (container) container.classList.add("invalid");
  const inputs = name === "registry_auth"
    ? [$("f-username"), $("f-password")]
    : [document.getElementById(`f-${name}`)];
  for (const input of inputs) if (input) input.setAttribute("aria-invalid", "true");
  if (!["image", "command", "env", "pull", "engine"].includes(name)) {
    form.querySelector("details.advanced").open = true;
  }
  return true;
}

function showFormError(message) {
  formError.textContent = message;
  formError.hidden = false;
}

function keyValueLines(text, field, errors) {
  const out = {};
  text.split("\n").forEach((raw, index) => {
    const line = raw.replace(/\r$/, "");
    if (!line.trim()) return;
    const eq = line.indexOf("=");
    if (eq <= 0) {
      errors.push([field, `line ${index + 1}: expected KEY=value`]);
      return;
    }
    out[line.slice(0, eq)] = line.slice(eq + 1);
  });
  return out;
}

function numberField(name, errors) {
  const input = $(`f-${name}`);
  if (input.validity.badInput) {
    errors.push([name, "must be a number"]);
    return undefined;
  }
  return input.value.trim() === "" ? undefined : Number(input.value);
}

// The request body, or the problems found before asking the server.
function buildRequest() {
  const errors = [];
  const value = (name) => $(`f-${name}`).value.trim();
  const body = { image: value("image") };
  if (!body.image) errors.push(["image", "an image is required"]);
  const command = value("command");
  if (command) body.command = command;
  const entrypoint = value("entrypoint");
  if (entrypoint) body.entrypoint = entrypoint;
  const env = keyValueLines($("f-env").value, "env", errors);
  for (const [key, text] of Object.entries(env)) {
    // "Run again" of another's run shows KEY=*** : its values are the creator's.
    if (text === "***") errors.push(["env", `${key}: enter the value (another's run does not show it)`]);
  }
  if (Object.keys(env).length) body.env = env;
  const labels = keyValueLines($("f-labels").value, "labels", errors);
  if (Object.keys(labels).length) body.labels = labels;
  const secretEnv = keyValueLines($("f-secret_env").value, "secret_env", errors);
  for (const [key, secret] of Object.entries(secretEnv)) {
    // "Run again" shows KEY=*** : the value itself was never kept.
    if (secret === "***") errors.push(["secret_env", `${key}: enter the value again (secret values are never kept)`]);
  }
  if (Object.keys(secretEnv).length) body.secret_env = secretEnv;
  for (const name of ["volumes", "ports"]) {
    // One docker-style string a line; the server parses and checks each.
    const lines = $(`f-${name}`).value.split("\n").map((line) => line.trim()).filter(Boolean);
    if (lines.length) body[name] = lines;
  }
  for (const name of ["workdir", "user", "platform", "memory", "network", "gpus"]) {
    if (value(name)) body[name] = value(name);
  }
  body.pull = $("f-pull").value;
  if ($("f-engine").value) body.engine = $("f-engine").value; // "": any engine
  const engineLabels = keyValueLines($("f-engine_labels").value, "engine_labels", errors);
  if (Object.keys(engineLabels).length) body.engine_labels = engineLabels;
  body.tty = $("f-tty").checked;
  body.auto_remove = $("f-auto_remove").checked;
  for (const name of ["timeout", "cpus", "pids_limit"]) {
    const n = numberField(name, errors);
    if (n !== undefined) body[name] = n;
  }
  const username = $("f-username").value;
  const password = $("f-password").value;
  if (username || password) body.registry_auth = { username, password };
  return { body, errors };
}

// Absent for a viewer, who may not start runs (the server leaves it out).
form?.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors();
  const { body, errors } = buildRequest();
  if (errors.length) {
    for (const [field, message] of errors) showFieldError(field, message);
    focusFirstError();
    return;
  }
  submit.disabled = true;
  busy.textContent = "Starting…";
  try {
    const response = await fetch("/api/runs", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json", ...csrfHeaders() },
      body: JSON.stringify(body),
    });
    if (response.status === 401) return signInAgain();
    const payload = await response.json().catch(() => null);
    if (response.status === 201 && payload) {
      busy.textContent = `Run ${payload.id} started; opening it…`;
      window.location.assign(payload.links.page);
      return;
    }
    const error = (payload && payload.error) || { message: `The server answered ${response.status}.` };
    let placed = 0;
    for (const f of error.fields || []) if (showFieldError(f.field, f.message)) placed++;
    if (!placed || placed < (error.fields || []).length) showFormError(error.message);
    else showFormError("The run was not started: see the fields marked below.");
    focusFirstError();
  } catch {
    showFormError("The server did not answer; the run was not started.");
  } finally {
    submit.disabled = false;
    if (busy.textContent === "Starting…") busy.textContent = "";
  }
});

function focusFirstError() {
  const input = form.querySelector("[aria-invalid='true']");
  if (input) input.focus();
  else if (!formError.hidden) formError.scrollIntoView({ block: "nearest" });
}

// -- the runs table ---------------------------------------------------------------------

const table = $("runs-table");
const tbody = $("runs-body");
const pageSize = Number(table.dataset.pageSize) || 50;
const firstPage = table.dataset.firstPage === "true";
const runs = new Map(); // id -> record shown
for (const record of JSON.parse($("runs-data").textContent)) runs.set(record.id, record);

function rowFor(record) {
  const exit = record.exit_code;
  const duration = record.durations && record.durations.total !== null && record.durations.total !== undefined
    ? formatDuration(record.durations.total)
    : isActive(record.status) ? formatDuration((Date.now() - Date.parse(record.created_at)) / 1000) : "";
  return h(
    "tr",
    { "data-run": record.id, "data-status": record.status },
    h("td", { class: "c-status" },
      h("span", { class: `badge badge-${record.status}`, "data-status": record.status, text: statusLabel(record.status) })),
    h("td", { class: "c-id" }, h("a", { href: record.links.page, text: record.id })),
    h("td", { class: "c-image" }, h("span", { class: "mono", title: record.spec.image, text: record.spec.image })),
    h("td", { class: "c-command" },
      h("code", { title: shellJoin(record.spec.command), text: shellJoin(record.spec.command) })),
    h("td", { class: "c-engine", text: record.engine || "" }),
    h("td", { class: "c-started" },
      h("time", { datetime: record.created_at, title: formatAbsolute(record.created_at), text: formatRelative(record.created_at) })),
    h("td", { class: "c-by", text: record.created_by || "" }),
    h("td", { class: "c-duration", text: duration }),
    h("td", { class: "c-exit" },
      exit === null || exit === undefined ? null : h("span", { class: exit === 0 ? "exit" : "exit exit-bad", text: String(exit) })),
  );
}

// Newer knowledge wins: a run's last_event_id only grows.
function newer(incoming, current, fromFeed) {
  if (!current) return true;
  return fromFeed ? incoming.last_event_id >= current.last_event_id : incoming.last_event_id > current.last_event_id;
}

function upsert(record, fromFeed) {
  if (fromFeed && touchedDuringFetch) touchedDuringFetch.add(record.id);
  const current = runs.get(record.id);
  const row = tbody.querySelector(`tr[data-run="${CSS.escape(record.id)}"]`);
  if (row) {
    if (!newer(record, current, fromFeed)) return;
    runs.set(record.id, record);
    const fresh = rowFor(record);
    if (current && current.status !== record.status) fresh.classList.add("changed");
    row.replaceWith(fresh);
    return;
  }
  if (!firstPage && fromFeed) return; // older pages only follow the runs they show
  runs.set(record.id, record);
  const fresh = rowFor(record);
  fresh.classList.add("new");
  // Newest first: place by creation time.
  const after = [...tbody.rows].find((tr) => {
    const other = runs.get(tr.dataset.run);
    return other && other.created_at < record.created_at;
  });
  tbody.insertBefore(fresh, after || null);
  while (tbody.rows.length > pageSize) {
    const last = tbody.rows[tbody.rows.length - 1];
    runs.delete(last.dataset.run);
    last.remove();
  }
  syncPager();
}

function syncPager() {
  $("runs-empty").hidden = tbody.rows.length > 0;
  const older = $("older-link");
  if (tbody.rows.length >= pageSize) {
    const last = tbody.rows[tbody.rows.length - 1];
    older.href = `/?cursor=${encodeURIComponent(last.dataset.run)}`;
    older.hidden = false;
  }
}

// Refetch the page shown (after a `reset`, and whenever the feed (re)opens,
// which closes the gap between the server's rendering and the subscription).
// Rows the feed touched while the request was out are kept as they are.
let touchedDuringFetch = null;

async function refetch() {
  const params = new URLSearchParams({ limit: String(pageSize) });
  const cursor = new URLSearchParams(window.location.search).get("cursor");
  if (cursor) params.set("cursor", cursor);
  const touched = new Set();
  touchedDuringFetch = touched;
  try {
    const response = await fetch(`/api/runs?${params}`, { headers: { accept: "application/json" } });
    if (!response.ok) return;
    const page = await response.json();
    for (const record of page.runs) upsert(record, false);
    const ids = new Set(page.runs.map((r) => r.id));
    for (const tr of [...tbody.rows]) {
      if (!ids.has(tr.dataset.run) && !touched.has(tr.dataset.run)) {
        runs.delete(tr.dataset.run); // deleted, or no longer on this page
        tr.remove();
      }
    }
    const older = $("older-link");
    older.hidden = !page.next_cursor;
    if (page.next_cursor) older.href = `/?cursor=${encodeURIComponent(page.next_cursor)}`;
    syncPager();
  } catch {
    // the feed's state already says what is wrong
  } finally {
    if (touchedDuringFetch === touched) touchedDuringFetch = null;
  }
}

// -- the engines panel --------------------------------------------------------------------

const engines = new EngineList(JSON.parse($("engines-data").textContent));
const enginesBody = $("engines-body");

// Redraw the rows that changed (and the form's engine choice).
function renderEngines() {
  const rows = new Map([...enginesBody.rows].map((tr) => [tr.dataset.engine, tr]));
  let before = null; // rows in the list's order, from the end
  for (const engine of engines.list.reverse()) {
    const fresh = engineRow(engine, vocab);
    const row = rows.get(engine.name);
    rows.delete(engine.name);
    if (row && row.isEqualNode(fresh)) {
      if (row.nextElementSibling !== before) enginesBody.insertBefore(row, before);
      before = row;
      continue;
    }
    if (row && row.dataset.state !== engine.state) fresh.classList.add("changed");
    if (row) row.remove();
    enginesBody.insertBefore(fresh, before);
    before = fresh;
  }
  for (const row of rows.values()) row.remove(); // no longer in the engines file
  setText($("engines-summary"), enginesSummary(engines.list));
  syncEngineChoice();
}

// The form's engine choice: one option per engine, worded with its state.
// Options are added, never removed: the one chosen (or "Run again"'s) stays.
function syncEngineChoice() {
  const select = $("f-engine");
  if (!select) return;
  for (const engine of engines.list) {
    const text = engineFacts(engine, vocab).option;
    const option = [...select.options].find((o) => o.value === engine.name);
    if (option) setText(option, text);
    else select.append(h("option", { value: engine.name, text }));
  }
}

// Load (active and queued runs) changes with the runs, which `engine` events
// do not carry: ask again after run events, one request at a time.
let enginesFetch = null;
let enginesAgain = false;

function refetchEngines() {
  if (enginesFetch) {
    enginesAgain = true;
    return;
  }
  enginesFetch = (async () => {
    try {
      const response = await fetch("/api/engines", { headers: { accept: "application/json" } });
      if (!response.ok) return;
      engines.replace((await response.json()).engines);
      renderEngines();
    } catch {
      // the feed's state already says what is wrong
    }
  })().finally(() => {
    enginesFetch = null;
    if (enginesAgain) {
      enginesAgain = false;
      refetchEngines();
    }
  });
}

const feedState = $("feed-state");
function setFeedState(value) {
  feedState.className = `conn conn-${value}`;
  feedState.dataset.state = value;
  feedState.querySelector(".conn-text").textContent = value;
}

function follow() {
  const feed = new EventSource("/api/events");
  feed.onopen = () => {
    setFeedState("live");
    refetch();
    refetchEngines();
  };
  feed.onerror = () => setFeedState(feed.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting");
  feed.addEventListener("run", (event) => {
    upsert(JSON.parse(event.data), true);
    refetchEngines();
  });
  feed.addEventListener("engine", (event) => {
    engines.apply(JSON.parse(event.data));
    renderEngines();
  });
  feed.addEventListener("reset", () => {
    refetch();
    refetchEngines();
  });
  feed.addEventListener("deleted", (event) => {
    const { id } = JSON.parse(event.data);
    tbody.querySelector(`tr[data-run="${CSS.escape(id)}"]`)?.remove();
    $("runs-empty").hidden = tbody.rows.length > 0;
  });
  window.addEventListener("pagehide", () => feed.close());
}

// Relative start times and running durations move on by themselves.
function tick() {
  const now = Date.now();
  for (const tr of tbody.rows) {
    const record = runs.get(tr.dataset.run);
    if (!record) continue;
    const time = tr.querySelector("time");
    if (time) setText(time, formatRelative(record.created_at, now));
    if (isActive(record.status)) {
      setText(tr.querySelector(".c-duration"), formatDuration((now - Date.parse(record.created_at)) / 1000));
    }
  }
}

tick();
setInterval(tick, 1000);
follow();
window.pullrun = { runs, refetch, engines, refetchEngines };
