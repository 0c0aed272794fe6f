// static/js/engines.js: the engines panel words an engine as the server's
// template does (backend/web/pages.py `engine_facts`, tests/js/fixtures/engines.json),
// and keeps the newest knowledge of each engine as events and refetches come.

import assert from "node:assert/strict";
import { describe as suite, test } from "node:test";

import { EngineList, engineFacts, enginesSummary, mergeEngine } from "../../static/js/engines.js";
import { fixture, vocabulary } from "./helpers.mjs";

const { cases, summaries } = fixture("engines.json");
const byName = new Map(cases.map(({ engine }) => [engine.name, engine]));

suite("as the server words them", () => {
  for (const { engine, facts } of cases) {
    test(`engine ${engine.name} (${engine.state})`, () => assert.deepEqual(engineFacts(engine, vocabulary), facts));
  }
  for (const [names, expected] of summaries) {
    test(`summary of [${names}]`, () => assert.equal(enginesSummary(names.map((n) => byName.get(n))), expected));
  }
});

test("an engine that is down says why; one that is up does not", () => {
  const down = cases.find(({ engine }) => engine.state === "down");
  assert.ok(down.facts.error);
  const up = engineFacts({ ...down.engine, state: "up" }, vocabulary);
  assert.equal(up.error, "");
  assert.equal(up.option, down.engine.name);
});

test("a state the vocabulary does not know is shown as it is", () => {
  const facts = engineFacts({ name: "x", state: "draining" }, vocabulary);
  assert.equal(facts.state_label, "draining");
  assert.equal(facts.option, "x (draining)");
  assert.equal(facts.load, "0/0");
});

const at = (seconds) => new Date(Date.UTC(2026, 10, 29, 23, 40, seconds)).toISOString();
const local = (fields) => ({ ...byName.get("local"), ...fields });

suite("mergeEngine", () => {
  test("a newer health check wins, load and all", () => {
    const current = local({ state: "up", checked_at: at(1), active_runs: 1 });
    const incoming = local({ state: "down", last_error: "gone", checked_at: at(2), active_runs: 0 });
    assert.deepEqual(mergeEngine(current, incoming), incoming);
  });

  test("an older health check keeps the newer state but brings its load", () => {
    const current = local({ state: "down", last_error: "gone", checked_at: at(5), active_runs: 0 });
    const incoming = local({ state: "up", last_error: null, checked_at: at(4), active_runs: 3, queued_runs: 2 });
    const merged = mergeEngine(current, incoming);
    assert.equal(merged.state, "down");
    assert.equal(merged.last_error, "gone");
    assert.equal(merged.checked_at, at(5));
    assert.equal(merged.active_runs, 3);
    assert.equal(merged.queued_runs, 2);
  });

  test("the same check (a refetch) is taken: its load is newer", () => {
    const current = local({ checked_at: at(3), active_runs: 1 });
    assert.equal(mergeEngine(current, local({ checked_at: at(3), active_runs: 2 })).active_runs, 2);
  });

  test("a never-checked engine is older than any check", () => {
    const checked = local({ state: "up", checked_at: at(1) });
    const unchecked = local({ state: "unknown", checked_at: null, version: null });
    assert.equal(mergeEngine(checked, unchecked).state, "up");
    assert.equal(mergeEngine(unchecked, checked).state, "up");
    assert.deepEqual(mergeEngine(undefined, unchecked), unchecked);
  });

  test("neither side is changed", () => {
    const current = local({ checked_at: at(9) });
    const incoming = local({ checked_at: at(1), active_runs: 4, state: "down" });
    const before = structuredClone([current, incoming]);
    for (const [a, b] of [[current, incoming], [incoming, current]]) {
      const merged = mergeEngine(a, b);
      assert.ok(merged !== a && merged !== b);
    }
    assert.deepEqual([current, incoming], before);
  });
});

suite("EngineList", () => {
  const engines = cases.map(({ engine }) => engine);

  test("keeps the server's order; an event for a new name is added at the end", () => {
    const list = new EngineList(engines.slice(0, 2));
    list.apply({ ...engines[0], state: "down", checked_at: "2099-01-01T00:00:00Z" });
    list.apply(engines[2]);
    assert.deepEqual(list.list.map((e) => e.name), ["local", "gpu1", "builder"]);
    assert.equal(list.get("local").state, "down");
  });

  test("a refetch sets the names and their order, and merges each", () => {
    const list = new EngineList(engines);
    const newer = { ...engines[1], state: "up", last_error: null, checked_at: "2099-01-01T00:00:00Z" };
    list.apply(newer);
    const stale = engines[1]; // down, as of before the event
    list.replace([{ ...stale, queued_runs: 0 }, engines[0]]);
    assert.deepEqual(list.list.map((e) => e.name), ["gpu1", "local"]);
    assert.equal(list.get("gpu1").state, "up");
    assert.equal(list.get("gpu1").queued_runs, 0);
    assert.equal(list.get("builder"), undefined);
  });

  test("holds copies: the caller's objects are not changed", () => {
    const mine = { ...engines[0] };
    const list = new EngineList([mine]);
    list.apply({ ...engines[0], active_runs: 3, checked_at: "2099-01-01T00:00:00Z" });
    assert.equal(mine.active_runs, engines[0].active_runs);
  });
});
