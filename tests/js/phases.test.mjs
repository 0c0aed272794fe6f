// static/js/phases.js: the run page's timeline, as backend/web/pages.py
// `timeline()` renders it first (tests/js/fixtures/phases.json).

import assert from "node:assert/strict";
import { test } from "node:test";

import { pastPhase, phaseView } from "../../static/js/phases.js";
import { fixture, vocabulary } from "./helpers.mjs";

const { cases } = fixture("phases.json");

for (const c of cases) {
  test(`timeline: ${c.name}`, () => {
    const times = Object.values(c.status_at).map(Date.parse);
    const now = Math.max(...times) + 1500;
    const view = phaseView(vocabulary, c.status_at, c.done, now);
    assert.deepEqual(view.map((p) => p.phase), c.timeline.map((p) => p.phase));
    view.forEach((p, i) => {
      const expected = c.timeline[i];
      assert.equal(p.state, expected.state, p.phase);
      if (p.state === "active") {
        // The phase in progress: the server leaves it to the page, which times it.
        assert.equal(expected.seconds, null);
        assert.equal(p.seconds, (now - Date.parse(c.status_at[vocabulary.phaseStatus[p.phase]])) / 1000);
      } else {
        assert.equal(p.seconds, expected.seconds, p.phase);
      }
    });
  });
}

test("the timeline's phases are the server's", () => {
  assert.deepEqual(phaseView(vocabulary, {}, null).map((p) => p.phase), vocabulary.phases);
});

test("pastPhase: a later phase was entered", () => {
  const at = (...statuses) => Object.fromEntries(statuses.map((s) => [s, "2026-11-27T21:57:15.000Z"]));
  assert.equal(pastPhase(vocabulary, at("queued"), "pull"), false);
  assert.equal(pastPhase(vocabulary, at("queued", "pulling"), "pull"), false);
  assert.equal(pastPhase(vocabulary, at("queued", "creating"), "pull"), true);
  assert.equal(pastPhase(vocabulary, at("queued", "running"), "pull"), true);
});
