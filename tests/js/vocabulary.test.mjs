// static/js/vocabulary.js over the server's vocabulary
// (tests/js/fixtures/vocabulary.json is backend/web/pages.py `vocabulary()`).

import assert from "node:assert/strict";
import { test } from "node:test";

import { makeVocabulary } from "../../static/js/vocabulary.js";
import { fixture, vocabulary } from "./helpers.mjs";

test("active statuses are the server's", () => {
  const raw = fixture("vocabulary.json");
  for (const status of raw.statuses) assert.equal(vocabulary.isActive(status), raw.active.includes(status), status);
  assert.equal(vocabulary.isActive("no such status"), false);
  assert.equal(vocabulary.isActive(undefined), false);
});

test("status labels are the server's", () => {
  assert.equal(vocabulary.statusLabel("timed_out"), "timed out");
  assert.equal(vocabulary.statusLabel("running"), "running");
  assert.equal(vocabulary.statusLabel("constructor"), "constructor"); // not an object key
  assert.equal(vocabulary.statusLabel(null), "");
});

test("every phase has its status, every status a label", () => {
  for (const phase of vocabulary.phases) assert.ok(vocabulary.statuses.includes(vocabulary.phaseStatus[phase]), phase);
  for (const status of vocabulary.statuses) assert.ok(vocabulary.statusLabel(status), status);
});

test("the vocabulary cannot be changed by a page's script", () => {
  const v = makeVocabulary(fixture("vocabulary.json"));
  assert.throws(() => {
    "use strict";
    v.phases.push("x");
  }, TypeError);
  assert.ok(Object.isFrozen(v.layerLabels));
});
