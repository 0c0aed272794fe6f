// The run page: starts from the server's snapshot (embedded JSON) and follows
// the run's event stream from the snapshot's last event id, so nothing is
// shown twice and nothing is missed (also on reload).
//
// The snapshot holds the log's tail; earlier lines are fetched on demand
// (GET /api/runs/{id}/lines?before=N, a page at a time). When they pushed the
// newest lines out of the view and the reader follows again, the page fetches
// a fresh snapshot (GET /api/runs/{id}/snapshot) and starts the log over from
// it: `log` events that arrive meanwhile are held, and only those after the
// snapshot's last event id are passed on.

import { csrfHeaders, signInAgain } from "./csrf.js";
import { formatCount, formatDuration, formatRelative, formatAbsolute, frameScheduler } from "./format.js";
import { LogFeed } from "./logmodel.js";
import { LogView } from "./logview.js";
import { pastPhase, phaseView } from "./phases.js";
import { PullView } from "./pull.js";
import { pageVocabulary } from "./vocabulary.js";

const $ = (id) => document.getElementById(id);
const EARLIER_PAGE = 1000; // lines per "Load earlier lines"
const vocab = pageVocabulary();
const { isActive, statusLabel } = vocab;
const run = JSON.parse($("run-data").textContent);
const snapshot = JSON.parse($("snapshot").textContent);

const state = {
  status: snapshot.done ? snapshot.done.status : snapshot.status || run.status,
  statusAt: { ...snapshot.status_at },
  done: snapshot.done,
  lastId: snapshot.last_event_id,
  conn: snapshot.done ? "finished" : "connecting",
  notices: snapshot.notices.length,
  engine: run.engine, // where it was placed (null while queued)
  node: run.node, // on a swarm: the node the cluster chose
};

// -- views --------------------------------------------------------------------------

const logs = new LogView({
  scroller: $("log"),
  body: $("log-body"),
  marker: $("log-marker"),
  markerText: $("log-marker-text"),
  info: $("log-info"),
  followButton: $("log-follow"),
  onTotal: (total) => setText($("line-total"), formatCount(total)),
  earlierButton: $("log-earlier"),
  errorBox: $("log-error"),
  errorText: $("log-error-text"),
  retryButton: $("log-retry"),
  fetchEarlier: (before) => getJSON(`${run.links.self}/lines?before=${before}&limit=${EARLIER_PAGE}`),
  onWantTail: () => feed.reload(() => getJSON(`${run.links.self}/snapshot`), state.lastId),
});
// `log` events go through the feed: it holds them while the log starts over from a fresh snapshot.
const feed = new LogFeed(logs);
logs.loadSnapshot(snapshot.lines, snapshot.total_lines, snapshot.earlier);
if (snapshot.done) logs.finish(snapshot.done.log_lines);

const pull = new PullView($("pull"), vocab.layerLabels);
pull.load(snapshot.layers, snapshot.pull_overall, snapshot.pull_error);
if (snapshot.done && snapshot.done.durations) pull.setDuration(snapshot.done.durations.pull);

const scheduleHeader = frameScheduler(renderHeader);

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function setConn(conn) {
  state.conn = conn;
  scheduleHeader();
}

function renderTimeline() {
  for (const view of phaseView(vocab, state.statusAt, state.done)) {
    const li = document.querySelector(`#timeline [data-phase="${view.phase}"]`);
    if (!li) continue;
    li.className = `phase phase-${view.state}`;
    li.dataset.state = view.state;
    if (view.state === "active") li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
    const text = view.seconds !== null && view.seconds !== undefined
      ? formatDuration(view.seconds)
      : view.state === "skipped" ? "skipped" : "–";
    setText(li.querySelector(".phase-duration"), text);
  }
}

function pullNote() {
  const policy = run.spec.pull;
  const at = state.statusAt;
  if (at[vocab.phaseStatus.pull]) return "";
  if (pastPhase(vocab, at, "pull")) return `Image already present (pull policy: ${policy}); nothing to pull.`;
  if (state.done) return state.done.error && state.done.error.phase === "pull" ? "" : "No pull was needed.";
  return state.status === "queued" ? "Waiting for a worker…" : "Checking the image…";
}

function renderHeader() {
  const status = state.status;
  const badge = $("status-badge");
  badge.className = `badge badge-${status}`;
  badge.dataset.status = status;
  setText(badge, statusLabel(status));
  document.title = `${statusLabel(status)} · ${run.spec.image} · ${run.id} - pullrun`;

  setText($("run-engine"), state.node ? `${state.engine} (node ${state.node})` : state.engine || "–");

  const conn = $("conn-state");
  conn.className = `conn conn-${state.conn}`;
  conn.dataset.state = state.conn;
  setText(conn.querySelector(".conn-text"), state.conn);

  // Absent when the signed-in identity may not cancel this run (the server decides).
  const cancel = $("cancel-run");
  if (cancel) cancel.hidden = !isActive(status);
  const done = state.done;
  if (done) {
    setText($("exit-code"), done.exit_code === null || done.exit_code === undefined ? "–" : String(done.exit_code));
    $("oom-badge").hidden = !done.oom_killed;
    setText($("total-duration"), formatDuration(done.durations && done.durations.total));
    setText($("line-total"), formatCount(done.log_lines));
    const error = done.error;
    $("run-error").hidden = !error;
    if (error) {
      setText($("run-error-phase"), `Error in ${error.phase}`);
      setText($("run-error-message"), error.message);
    }
  } else {
    setText($("total-duration"), formatDuration((Date.now() - Date.parse(run.created_at)) / 1000));
  }
  renderTimeline();
  pull.setNote(pullNote());
}

function renderTimes() {
  const created = $("created-at");
  created.textContent = formatRelative(run.created_at);
  created.title = formatAbsolute(run.created_at);
}

// -- events ---------------------------------------------------------------------------

const handlers = {
  status(data) {
    state.status = data.status;
    state.statusAt[data.status] = data.at;
    if ("engine" in data) state.engine = data.engine; // the run left the queue for it
    if ("node" in data) state.node = data.node;
    scheduleHeader();
  },
  pull(data) {
    pull.apply(data);
  },
  log(json, id) {
    feed.add(id, json); // parsed by the log view, within its per-frame budget
  },
  notice(data) {
    const list = $("notices");
    const li = document.createElement("li");
    li.textContent = data.message;
    list.append(li);
    $("notices-card").hidden = false;
  },
  done(data) {
    state.done = data;
    state.status = data.status;
    logs.finish(data.log_lines);
    if (data.durations) pull.setDuration(data.durations.pull);
    setConn("finished");
    stopTicking();
  },
};

let source = null;

function connect() {
  // The browser sends Last-Event-ID itself when it reconnects (and the header
  // wins over ?after=); the server answers 204 once `done` was seen.
  source = new EventSource(`${run.links.events}?after=${state.lastId}`);
  source.onopen = () => setConn("live");
  source.onerror = () => {
    if (state.done) return;
    setConn(source.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting");
    if (source.readyState === EventSource.CLOSED) recoverClosed();
  };
  for (const [type, handle] of Object.entries(handlers)) {
    source.addEventListener(type, (event) => {
      const id = Number(event.lastEventId);
      if (id && id <= state.lastId) return; // already shown
      if (id && id !== state.lastId + 1) console.warn(`pullrun: event ${id} after ${state.lastId}`);
      if (id) state.lastId = id;
      handle(type === "log" ? event.data : JSON.parse(event.data), id);
      if (type === "done") source.close();
    });
  }
}

// The stream was closed for good (an HTTP error): ask the API how the run
// stands and say so; a reload starts from a fresh snapshot.
async function recoverClosed() {
  try {
    const response = await fetch(run.links.self, { headers: { accept: "application/json" } });
    if (response.ok) {
      const record = await response.json();
      if (!isActive(record.status)) {
        setConn("finished");
        showActionError("The run has ended; reload the page to see its last events.");
        return;
      }
    }
  } catch {
    // offline: say so below
  }
  showActionError("Lost the connection to the server; reload the page to follow the run again.");
}

function showActionError(message) {
  const box = $("action-error");
  box.textContent = message;
  box.hidden = false;
}

// -- fetches of the log's lines ----------------------------------------------------------

// GET of one of the run's API routes (same origin: the session cookie goes along).
async function getJSON(url) {
  let response;
  try {
    response = await fetch(url, { headers: { accept: "application/json" }, credentials: "same-origin" });
  } catch {
    throw new Error("the server did not answer");
  }
  if (response.status === 401) {
    signInAgain();
    throw new Error("signed out");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    throw new Error((body && body.error && body.error.message) || `the server answered ${response.status}`);
  }
  return response.json();
}

// -- ticking clocks ---------------------------------------------------------------------

let ticker = null;
function stopTicking() {
  if (ticker !== null) clearInterval(ticker);
  ticker = null;
  scheduleHeader();
}

// -- controls ---------------------------------------------------------------------------

$("cancel-run")?.addEventListener("click", async (event) => {
  const button = event.currentTarget;
  button.disabled = true;
  button.textContent = "Canceling…";
  try {
    const response = await fetch(`${run.links.self}/cancel`, { method: "POST", headers: csrfHeaders() });
    if (response.status === 401) return signInAgain();
    if (!response.ok && response.status !== 409) {
      const body = await response.json().catch(() => null);
      showActionError((body && body.error && body.error.message) || `Cancel failed (${response.status}).`);
      button.disabled = false;
      button.textContent = "Cancel";
    }
  } catch {
    showActionError("Cancel failed: the server did not answer.");
    button.disabled = false;
    button.textContent = "Cancel";
  }
});

const filterInput = $("log-filter");
const regexBox = $("log-regex");
const filterError = $("log-filter-error");
let filterTimer = null;

// Filter now; an invalid pattern is said next to the field (nothing is filtered).
function applyFilter() {
  clearTimeout(filterTimer);
  const error = logs.setFilter(filterInput.value, regexBox.checked);
  if (error) filterInput.setAttribute("aria-invalid", "true");
  else filterInput.removeAttribute("aria-invalid");
  setText(filterError, error || "");
  filterError.hidden = !error;
}

filterInput.addEventListener("input", () => {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(applyFilter, 120);
});
filterInput.addEventListener("keydown", (e) => {
  if (e.key === "Escape") {
    filterInput.value = "";
    applyFilter();
  }
});
regexBox.addEventListener("change", applyFilter);

const times = $("log-times");
times.checked = localStorage.getItem("pullrun.timestamps") === "1";
logs.setTimes(times.checked);
times.addEventListener("change", () => {
  logs.setTimes(times.checked);
  localStorage.setItem("pullrun.timestamps", times.checked ? "1" : "0");
});

const wrap = $("log-wrap");
wrap.checked = localStorage.getItem("pullrun.wrap") === "1";
logs.setWrap(wrap.checked);
wrap.addEventListener("change", () => {
  logs.setWrap(wrap.checked);
  localStorage.setItem("pullrun.wrap", wrap.checked ? "1" : "0");
});

// -- start ------------------------------------------------------------------------------

renderTimes();
setInterval(renderTimes, 10_000);
renderHeader();
if (!state.done) {
  ticker = setInterval(scheduleHeader, 250);
  connect();
}

// For tests and the curious: how the page is doing.
window.pullrun = { logs, pull, state, get source() { return source; } };
