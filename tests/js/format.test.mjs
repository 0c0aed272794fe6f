// static/js/format.js. Durations and sizes must read as the templates write
// them (backend/web/pages.py, tests/js/fixtures/format.json): the page's
// script redraws what the server rendered.

import assert from "node:assert/strict";
import { describe as suite, test } from "node:test";

import {
  formatBytes, formatCount, formatDuration, formatRelative, secondsBetween, shellJoin,
} from "../../static/js/format.js";
import { fixture } from "./helpers.mjs";

const { durations, bytes } = fixture("format.json");

suite("as the server writes them", () => {
  for (const [seconds, expected] of durations) {
    test(`duration ${seconds}`, () => assert.equal(formatDuration(seconds), expected));
  }
  for (const [size, expected] of bytes) {
    test(`size ${size}`, () => assert.equal(formatBytes(size), expected));
  }
});

test("nothing to say is a dash", () => {
  for (const value of [null, undefined, NaN, Infinity]) {
    assert.equal(formatDuration(value), "–");
    assert.equal(formatBytes(value), "–");
  }
  assert.equal(formatDuration(-3), "0 ms");
});

test("counts", () => {
  assert.equal(formatCount(0), "0");
  assert.equal(formatCount(1_000_000), "1,000,000");
});

test("relative times", () => {
  const now = Date.parse("2026-11-27T22:00:00.000Z");
  const ago = (s) => new Date(now - s * 1000).toISOString();
  assert.equal(formatRelative(ago(2), now), "just now");
  assert.equal(formatRelative(ago(-60), now), "just now"); // a clock a little ahead
  assert.equal(formatRelative(ago(42), now), "42 s ago");
  assert.equal(formatRelative(ago(600), now), "10 min ago");
  assert.equal(formatRelative(ago(7300), now), "2 h ago");
  assert.notEqual(formatRelative(ago(200_000), now), "");
  assert.equal(formatRelative("not a time", now), "not a time");
});

test("secondsBetween", () => {
  assert.equal(secondsBetween("2026-11-27T21:57:15.250Z", "2026-11-27T21:57:17.339Z"), 2.089);
  assert.equal(secondsBetween("2026-11-27T21:57:17Z", "2026-11-27T21:57:15Z"), 0);
  assert.equal(secondsBetween("x", "2026-11-27T21:57:15Z"), null);
});

test("shellJoin quotes like Python's shlex.join", () => {
  assert.equal(shellJoin(null), "");
  assert.equal(shellJoin([]), "");
  assert.equal(shellJoin(["echo", "hi"]), "echo hi");
  assert.equal(shellJoin(["sh", "-c", "echo $HOME; exit 3"]), "sh -c 'echo $HOME; exit 3'");
  assert.equal(shellJoin(["it's", ""]), `'it'"'"'s' ''`);
  assert.equal(shellJoin(["a=b", "x@y:1,2/3.4+5%"]), "a=b x@y:1,2/3.4+5%");
});
