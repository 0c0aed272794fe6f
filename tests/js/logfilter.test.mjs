// The run page's log filter (logmodel.js lineMatcher): a substring or, with
// the "Regex" toggle, a regular expression; an invalid pattern is an error
// to show next to the field, never an exception. And each line's time (the
// "Timestamps" toggle) is its `log` event's `at`, the first part's for a line
// sent in parts.

import assert from "node:assert/strict";
import { test } from "node:test";

import { LogModel, MAX_FILTER_CHARS, lineMatcher } from "../../static/js/logmodel.js";
import { FakeClock, HeadlessSink, drain } from "./helpers.mjs";

test("no filter: nothing to test", () => {
  for (const [query, regex] of [["", false], ["   ", false], ["", true]]) {
    assert.deepEqual(lineMatcher(query, regex), { test: null, error: null });
  }
});

test("a substring matches case-insensitively, spaces around it ignored", () => {
  const { test: match, error } = lineMatcher("  ERROR ", false);
  assert.equal(error, null);
  assert.ok(match("an error here"));
  assert.ok(match("Error: x"));
  assert.ok(!match("all good"));
  // regex characters are plain text without the toggle
  assert.ok(lineMatcher("a.b", false).test("a.b"));
  assert.ok(!lineMatcher("a.b", false).test("axb"));
});

test("a regular expression matches case-insensitively", () => {
  const { test: match, error } = lineMatcher("^warn(ing)?: \\d+$", true);
  assert.equal(error, null);
  assert.ok(match("WARNING: 12"));
  assert.ok(match("warn: 3"));
  assert.ok(!match("warning: x"));
  assert.ok(!match("a warn: 3"));
  // the same pattern twice in a row gives the same answer (no `g` state)
  const dot = lineMatcher("a.b", true).test;
  assert.ok(dot("axb") && dot("axb"));
});

test("an invalid pattern is an error, not an exception", () => {
  for (const bad of ["(", "[a-", "a{2,1}", "*", "(?<n>a)(?<n>b)"]) {
    const result = lineMatcher(bad, true);
    assert.equal(result.test, null, bad);
    assert.match(result.error, /^Invalid regular expression: /, bad);
  }
  // the same text without the toggle is a plain substring
  assert.ok(lineMatcher("(", false).test("f(x)"));
});

test("a filter past MAX_FILTER_CHARS is refused", () => {
  const long = "a".repeat(MAX_FILTER_CHARS + 1);
  for (const regex of [false, true]) {
    const result = lineMatcher(long, regex);
    assert.equal(result.test, null);
    assert.match(result.error, /longer than/);
  }
});

function shown(events, snapshot = null) {
  const clock = new FakeClock();
  const model = new LogModel({ cap: 5000, clock: clock.now });
  const sink = new HeadlessSink();
  if (snapshot) model.loadSnapshot(snapshot, snapshot.length);
  for (const data of events) model.addRaw(JSON.stringify(data));
  drain(model, sink, clock);
  return sink.lines().map(({ n, text, at }) => [n, text, at]);
}

test("each line gets its event's `at`; a line sent in parts its first part's", () => {
  const lines = shown([
    { stream: "stdout", at: "2026-11-29T23:40:01.123Z", first: 1, lines: ["a", "b", "Name? "], partial: true },
    { stream: "stderr", at: "2026-11-29T23:40:02.000Z", first: 4, lines: ["warn"], partial: false },
    // other lines were numbered meanwhile: the continuation comes alone (lines.py)
    { stream: "stdout", at: "2026-11-29T23:40:09.500Z", first: 3, lines: ["bob"], partial: false },
    { stream: "stdout", at: "2026-11-29T23:40:09.500Z", first: 5, lines: ["c"], partial: false },
  ]);
  assert.deepEqual(lines, [
    [1, "a", "2026-11-29T23:40:01.123Z"],
    [2, "b", "2026-11-29T23:40:01.123Z"],
    [3, "Name? bob", "2026-11-29T23:40:01.123Z"],
    [4, "warn", "2026-11-29T23:40:02.000Z"],
    [5, "c", "2026-11-29T23:40:09.500Z"],
  ]);
});

test("snapshot lines keep their `at`; an older log's lines have none", () => {
  const lines = shown(
    [{ stream: "stdout", first: 2, lines: ["no time"], partial: false }],
    [{ n: 1, stream: "stdout", text: "from the page", partial: false, at: "2026-11-29T23:40:01.000Z" }],
  );
  assert.deepEqual(lines, [
    [1, "from the page", "2026-11-29T23:40:01.000Z"],
    [2, "no time", null],
  ]);
});

test("a flood of events with `at` is still skipped unparsed, times kept for the backfill", () => {
  const clock = new FakeClock();
  const model = new LogModel({ cap: 1000, clock: clock.now });
  const sink = new HeadlessSink();
  for (let k = 0; k < 50; k++) {
    // long enough lines that the waiting output is parsed the flood way
    const lines = Array.from({ length: 100 }, (_, i) => `${k * 100 + i + 1} ${"x".repeat(60)}`);
    const at = `2026-11-29T23:40:${String(k).padStart(2, "0")}.000Z`;
    model.addRaw(JSON.stringify({ stream: "stdout", at, first: k * 100 + 1, lines, partial: false }));
  }
  drain(model, sink, clock);
  assert.ok(model.stats.unparsed > 0, "old whole-line events skipped without parsing");
  const out = sink.lines();
  assert.equal(out.length, 1000);
  assert.equal(out.at(-1).n, 5000);
  for (const line of out) {
    const k = Math.floor((line.n - 1) / 100);
    assert.equal(line.at, `2026-11-29T23:40:${String(k).padStart(2, "0")}.000Z`, `line ${line.n}`);
  }
});
