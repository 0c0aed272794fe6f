// The engines panel of the runs page and the form's engine choice: the
// engine objects of GET /api/engines and of the `engine` events of
// GET /api/events, as the page words and keeps them.
//
// engineFacts and enginesSummary say what backend/web/pages.py `engine_facts`
// and `engines_summary` say (tests/js/fixtures/engines.json keeps them in
// step); engineRow draws the row templates/_partials.html `engine_row` draws.
// EngineList and mergeEngine are pure: tests/js/engines.test.mjs.

import { formatBytes, h } from "./format.js";

const UP = "up";
const UNKNOWN = "unknown";

// An engine object as the panel and the engine choice word it.
export function engineFacts(engine, vocab) {
  const state = engine.state || UNKNOWN;
  const label = vocab.engineStateLabel(state);
  const version = engine.version;
  const api = engine.api_version;
  const platform = [engine.os, engine.arch].filter((part) => part).join("/");
  const labels = Object.entries(engine.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  const name = String(engine.name);
  const count = (value) => value || 0;
  return {
    name,
    host: String(engine.host || ""),
    labels,
    state,
    state_label: label,
    error: state === UP ? "" : String(engine.last_error || ""),
    version: version ? (api ? `${version} (API ${api})` : String(version)) : "–",
    platform: platform || "–",
    cpus: engine.cpus === null || engine.cpus === undefined ? "–" : String(engine.cpus),
    memory: engine.memory === null || engine.memory === undefined ? "–" : formatBytes(engine.memory),
    load: `${count(engine.active_runs)}/${count(engine.max_concurrent_runs)}`,
    queued: `${count(engine.queued_runs)} queued`,
    option: state === UP ? name : `${name} (${label})`,
  };
}

// The panel's heading note.
export function enginesSummary(engines) {
  const up = engines.filter((engine) => engine.state === UP).length;
  return `${up} of ${engines.length} up`;
}

// What a health check found (the rest, the load and the config, is as of
// whenever the object was made).
const HEALTH = ["state", "version", "api_version", "os", "arch", "cpus", "memory", "last_error", "checked_at"];

function checkedAt(engine) {
  const t = Date.parse(engine && engine.checked_at);
  return Number.isNaN(t) ? -Infinity : t;
}

// `incoming` (an event, or a fresh GET /api/engines) over `current`: the
// newest health check wins, so an answer that was on its way while an
// `engine` event came does not bring back the older state; its load is newer
// than whatever came before it and is always taken.
export function mergeEngine(current, incoming) {
  if (!current || checkedAt(incoming) >= checkedAt(current)) return { ...incoming };
  const merged = { ...incoming };
  for (const key of HEALTH) merged[key] = current[key];
  return merged;
}

// The engines shown, in the engines file's order (the server's).
export class EngineList {
  constructor(engines = []) {
    this.byName = new Map();
    for (const engine of engines) this.byName.set(engine.name, { ...engine });
  }

  get list() {
    return [...this.byName.values()];
  }

  get(name) {
    return this.byName.get(name);
  }

  // One engine (an `engine` event); a name not seen yet is added at the end.
  apply(engine) {
    this.byName.set(engine.name, mergeEngine(this.byName.get(engine.name), engine));
  }

  // All of them (GET /api/engines): its names and order, each merged.
  replace(engines) {
    const fresh = new Map();
    for (const engine of engines) fresh.set(engine.name, mergeEngine(this.byName.get(engine.name), engine));
    this.byName = fresh;
  }
}

// The panel's row of one engine (the markup of _partials.html `engine_row`).
export function engineRow(engine, vocab) {
  const f = engineFacts(engine, vocab);
  return h(
    "tr",
    { "data-engine": f.name, "data-state": f.state },
    h("td", { class: "c-name", "data-label": "Engine" },
      h("strong", { class: "engine-name", text: f.name }),
      h("span", { class: "engine-host mono", title: f.host, text: f.host }),
      f.labels ? h("span", { class: "engine-labels mono", text: f.labels }) : null),
    h("td", { class: "c-state", "data-label": "State" },
      h("span", { class: `badge engine-state engine-${f.state}`, "data-state": f.state, text: f.state_label }),
      f.error ? h("span", { class: "engine-error", text: f.error }) : null),
    h("td", { class: "c-version", "data-label": "Version", text: f.version }),
    h("td", { class: "c-platform", "data-label": "Platform", text: f.platform }),
    h("td", { class: "c-cpus", "data-label": "CPUs", text: f.cpus }),
    h("td", { class: "c-memory", "data-label": "Memory", text: f.memory }),
    h("td", { class: "c-load", "data-label": "Load" },
      h("span", { class: "engine-load", text: f.load }),
      h("span", { class: "engine-queued", text: f.queued })),
  );
}
