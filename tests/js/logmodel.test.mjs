// static/js/logmodel.js: `log` events -> the lines the page shows.
// tests/js/fixtures/lines.json holds event streams and the lines that
// backend/storage/reader.py's joiner makes of them: the model must show the
// same lines, however the events arrive, and the newest `cap` of them when
// there are more.

import assert from "node:assert/strict";
import { describe as suite, test } from "node:test";

import { FLOOD_FRAME_MS, FRAME_CHARS, LogModel, QUIET_MS, describe } from "../../static/js/logmodel.js";
import { MAX_SCAN } from "../../static/js/term.js";
import { FakeClock, HeadlessSink, drain, fixture } from "./helpers.mjs";

const { cases } = fixture("lines.json");
const byName = Object.fromEntries(cases.map((c) => [c.name, c]));

function setup({ cap = 5000, tick = 0 } = {}) {
  const clock = new FakeClock({ tick });
  const model = new LogModel({ cap, clock: clock.now });
  return { clock, model, sink: new HeadlessSink() };
}

const raw = (data) => JSON.stringify(data); // the server's key order is kept

test("the fixtures have line cases", () => {
  assert.ok(cases.length >= 10);
  assert.ok(cases.some((c) => c.lines.some((line) => line.partial === false) && c.events.some((e) => e.partial)));
});

for (const c of cases) {
  suite(`lines: ${c.name}`, () => {
    const last = c.lines.length ? c.lines[c.lines.length - 1].n : 0;

    test("events added at once give the joiner's lines", () => {
      const { clock, model, sink } = setup();
      for (const data of c.events) model.add(structuredClone(data));
      drain(model, sink, clock);
      assert.deepEqual(sink.lines(), c.lines);
      assert.equal(model.total, last);
    });

    test("raw events, a frame after each, give the joiner's lines", () => {
      const { clock, model, sink } = setup();
      for (const data of c.events) {
        model.addRaw(raw(data));
        clock.advance(5);
        model.frame(sink);
      }
      drain(model, sink, clock);
      assert.deepEqual(sink.lines(), c.lines);
    });

    test("raw events parsed and drawn within time budgets give the joiner's lines", () => {
      const { clock, model, sink } = setup({ tick: 1 });
      for (const data of c.events) model.addRaw(raw(data));
      const frames = drain(model, sink, clock);
      assert.deepEqual(sink.lines(), c.lines);
      if (c.events.length > 10) assert.ok(frames > 2, "budgets spread the work over frames");
    });

    for (const snap of c.snapshots || []) {
      test(`a page loaded after event ${snap.after} shows the same lines`, () => {
        const { clock, model, sink } = setup();
        model.loadSnapshot(structuredClone(snap.lines), snap.total);
        drain(model, sink, clock);
        assert.deepEqual(sink.lines(), snap.lines);
        for (const data of c.events.slice(snap.after)) {
          model.addRaw(raw(data));
          clock.advance(20);
          model.frame(sink);
        }
        drain(model, sink, clock);
        assert.deepEqual(sink.lines(), c.lines);
        assert.equal(model.total, last);
      });
    }
  });
}

suite("more lines than the cap", () => {
  const c = byName["assembled-seq-with-meter"];
  const cap = 400;
  const newest = c.lines.slice(-cap);

  test("the case is longer than the cap", () => {
    assert.ok(c.lines.length > 2 * cap);
  });

  test("arriving live, the newest `cap` lines are shown", () => {
    const { clock, model, sink } = setup({ cap });
    for (const data of c.events) {
      model.addRaw(raw(data));
      clock.advance(16);
      model.frame(sink);
      assert.ok(sink.shown.length <= cap);
    }
    drain(model, sink, clock);
    assert.deepEqual(sink.lines(), newest);
    assert.equal(model.domLines, cap);
  });

  test("arriving all at once (a flood), the newest lines are shown, then filled in up to the cap", () => {
    const { clock, model, sink } = setup({ cap });
    for (const data of c.events) model.addRaw(raw(data));
    clock.advance(16);
    model.frame(sink);
    assert.equal(model.stats.floods, 1);
    assert.ok(sink.shown.length < cap, "only the newest lines are drawn during the flood");
    assert.deepEqual(sink.lines(), c.lines.slice(-sink.shown.length));
    drain(model, sink, clock);
    assert.ok(model.stats.backfilled > 0);
    assert.deepEqual(sink.lines(), newest);
    assert.equal(model.total, c.lines.length);
  });

  test("a flood that goes on is drawn at most every FLOOD_FRAME_MS", () => {
    const { clock, model, sink } = setup({ cap });
    const events = c.events;
    const half = Math.floor(events.length / 2);
    for (const data of events.slice(0, half)) model.addRaw(raw(data));
    clock.advance(16);
    model.frame(sink);
    assert.ok(model.flooding);
    const drawn = sink.updates;
    for (const data of events.slice(half)) model.addRaw(raw(data));
    clock.advance(FLOOD_FRAME_MS / 2);
    model.frame(sink);
    assert.equal(sink.updates, drawn, "too soon: nothing drawn");
    drain(model, sink, clock);
    assert.deepEqual(sink.lines(), newest);
  });

  test("within time budgets, the newest lines are shown", () => {
    const { clock, model, sink } = setup({ cap, tick: 1 });
    for (const data of c.events) model.addRaw(raw(data));
    drain(model, sink, clock);
    assert.deepEqual(sink.lines(), newest);
  });
});

suite("a reader scrolled up", () => {
  const cap = 400;
  const flood = (first, count) => ({
    stream: "stdout", first, lines: Array.from({ length: count }, (_, i) => String(first + i)), partial: false,
  });

  test("is left alone by a flood, then sees the end when following again", () => {
    const { clock, model, sink } = setup({ cap });
    model.addRaw(raw(flood(1, 50)));
    drain(model, sink, clock);
    const read = sink.lines();
    model.stuck = false;
    for (let first = 51; first < 3000; first += 100) model.addRaw(raw(flood(first, 100)));
    drain(model, sink, clock);
    assert.ok(model.paused);
    assert.deepEqual(sink.lines(), read, "what they read stays");
    assert.equal(model.total, 3050);
    model.stuck = true;
    drain(model, sink, clock);
    assert.ok(!model.paused);
    const shown = sink.lines();
    assert.equal(shown.length, cap);
    assert.deepEqual(shown.map((line) => line.n), Array.from({ length: cap }, (_, i) => 3051 - cap + i));
  });

  test("sees an open line they read completed, even when a flood skips its event", () => {
    const { clock, model, sink } = setup({ cap });
    const prompt = { stream: "stderr", first: 51, lines: ["Password: "], partial: true };
    const answer = { stream: "stderr", first: 51, lines: ["(hidden)"], partial: false };
    model.addRaw(raw(flood(1, 50)));
    model.addRaw(raw(prompt));
    drain(model, sink, clock);
    model.stuck = false;
    // A flood on stdout; the prompt's continuation comes in the middle of it.
    for (let first = 52; first < 1052; first += 100) model.addRaw(raw(flood(first, 100)));
    clock.advance(16);
    model.frame(sink);
    assert.ok(model.flooding && model.paused);
    model.addRaw(raw(answer));
    for (let first = 1052; first < 2052; first += 100) model.addRaw(raw(flood(first, 100)));
    drain(model, sink, clock);
    const shown = sink.lines();
    assert.equal(shown.length, 51);
    assert.deepEqual(shown[50], { n: 51, stream: "stderr", text: "Password: (hidden)", partial: false, at: null });
  });
});

suite("describe: the marker and the info line", () => {
  test("everything shown", () => {
    assert.deepEqual(
      describe({ total: 1, first: 1, last: null, paused: false, shown: 1, filter: "", matches: 0 }),
      { marker: null, info: "1 line" },
    );
  });

  test("earlier lines only in the full log", () => {
    assert.deepEqual(
      describe({ total: 1_000_000, first: 995_001, last: null, paused: false, shown: 5000, filter: "", matches: 0 }),
      { marker: "995,000 earlier lines are not shown", info: "1,000,000 lines · showing the last 5,000" },
    );
    assert.equal(
      describe({ total: 2, first: 2, last: null, paused: false, shown: 1, filter: "", matches: 0 }).marker,
      "1 earlier line is not shown",
    );
  });

  test("nothing shown yet", () => {
    assert.deepEqual(
      describe({ total: 0, first: null, last: null, paused: false, shown: 0, filter: "", matches: 0 }),
      { marker: null, info: "0 lines" },
    );
  });

  test("paused, filtered", () => {
    assert.deepEqual(
      describe({ total: 600_001, first: 1, last: 300, paused: true, shown: 300, filter: "err", matches: 2 }),
      {
        marker: null,
        info: "600,001 lines · 599,701 newer not shown while you read: follow to see the end · 2 matching “err”",
      },
    );
  });
});

test("the run's own count is the last word", () => {
  const { model } = setup();
  model.add({ stream: "stdout", first: 1, lines: ["a", "b"], partial: false });
  assert.equal(model.shownTotal, 2);
  model.finish(7);
  assert.equal(model.shownTotal, 7);
});

test("a quiet period is what ends a flood's skipping and starts the backfill", () => {
  const { clock, model, sink } = setup({ cap: 400 });
  model.addRaw(raw({ stream: "stdout", first: 1, lines: Array.from({ length: 2000 }, (_, i) => `${i + 1}`), partial: false }));
  clock.advance(16);
  model.frame(sink);
  const during = sink.shown.length;
  clock.advance(FLOOD_FRAME_MS);
  model.frame(sink);
  assert.equal(sink.shown.length, during, "not quiet yet: no backfill");
  clock.advance(QUIET_MS);
  model.frame(sink);
  assert.ok(sink.shown.length > during);
});

suite("huge lines", () => {
  test("a frame lays out about FRAME_CHARS characters at most: huge lines get frames of their own", () => {
    const { clock, model, sink } = setup();
    const huge = "h".repeat(MAX_SCAN);
    const count = 2 * Math.ceil(FRAME_CHARS / MAX_SCAN) + 1;
    model.add({ stream: "stdout", first: 1, lines: [...Array(count)].map(() => huge), partial: false });
    model.add({ stream: "stdout", first: count + 1, lines: ["small"], partial: false });
    clock.advance(16);
    model.frame(sink);
    assert.equal(sink.shown.length, FRAME_CHARS / MAX_SCAN);
    const frames = drain(model, sink, clock);
    assert.ok(frames >= 2, frames);
    assert.equal(sink.shown.length, count + 1);
    assert.equal(sink.shown.at(-1).text, "small");
  });

  test("a 10 MB line without a newline, in parts, is one line", () => {
    const { clock, model, sink } = setup();
    const part = "p".repeat(1_000_000);
    for (let k = 0; k < 10; k++) model.add({ stream: "stdout", first: 1, lines: [part], partial: k < 9 });
    drain(model, sink, clock);
    assert.equal(sink.shown.length, 1);
    assert.equal(sink.shown[0].text.length, 10_000_000);
    assert.equal(model.total, 1);
  });
});
