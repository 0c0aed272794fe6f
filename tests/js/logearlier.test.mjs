// static/js/logmodel.js, earlier lines on demand: the run page starts from
// the log's tail (the server's snapshot) and loads the lines before the oldest
// shown a page at a time (GET /api/runs/{id}/lines?before=N). Pages continue
// without gap or repeat; past the cap the newest lines make room and the view
// detaches from the end; following again starts over from a fresh snapshot
// (LogFeed), and live output that arrived meanwhile is neither lost nor shown
// twice.

import assert from "node:assert/strict";
import { describe as suite, test } from "node:test";

import { LogFeed, LogModel } from "../../static/js/logmodel.js";
import { FakeClock, HeadlessSink, drain } from "./helpers.mjs";

const AT = "2026-11-30T02:00:00.000Z";
const TAIL = 1000; // lines of the server's snapshot (backend/web/pages.py TAIL_LINES)
const PAGE = 1000; // lines per "Load earlier lines" (static/js/run.js)

// A run's log as the server has it: `log` events of whole lines, numbered from 1.
class FakeRun {
  constructor() {
    this.events = []; // [id, data as JSON text]
    this.lines = []; // [{n, stream, text, partial, at}]
  }

  // One `log` event of `count` lines; its [id, JSON text], as the stream sends it.
  print(count, stream = "stdout") {
    const first = this.lines.length + 1;
    const texts = Array.from({ length: count }, (_, i) => `${stream} line ${first + i}`);
    texts.forEach((text, i) => this.lines.push({ n: first + i, stream, text, partial: false, at: AT }));
    const data = { stream, at: AT, first, lines: texts, partial: false };
    this.events.push([this.events.length + 1, JSON.stringify(data)]);
    return this.events[this.events.length - 1];
  }

  // GET /api/runs/{id}/snapshot (the lines part of it).
  snapshot() {
    const lines = structuredClone(this.lines.slice(-TAIL));
    const first = lines.length ? lines[0].n : this.lines.length + 1;
    return { last_event_id: this.events.length, lines, total_lines: this.lines.length, first_line: first, earlier: first > 1 };
  }

  // GET /api/runs/{id}/lines?before=N&limit=L
  linesBefore(before, limit = PAGE) {
    const from = Math.max(1, before - limit);
    const lines = structuredClone(this.lines.slice(from - 1, before - 1));
    return { lines, first: lines.length ? lines[0].n : before, earlier: from > 1 };
  }
}

function setup({ cap = 5000 } = {}) {
  const clock = new FakeClock();
  const model = new LogModel({ cap, clock: clock.now });
  const sink = new HeadlessSink();
  // What LogFeed talks to: logview.js's LogView, here the model and the headless sink.
  const logs = {
    failures: [],
    addRaw: (json) => model.addRaw(json),
    resetTail: (lines, total, earlier) => model.resetTail(lines, total, earlier, sink),
    tailFailed: (message) => {
      logs.failures.push(message);
      model.tailFailed();
    },
  };
  return { clock, model, sink, logs };
}

// The page opened on `run`: its snapshot drawn.
function open(run, { cap } = {}) {
  const s = setup({ cap });
  const snap = run.snapshot();
  s.model.loadSnapshot(snap.lines, snap.total_lines, snap.earlier);
  drain(s.model, s.sink, s.clock);
  return { ...s, lastId: snap.last_event_id };
}

// One page of earlier lines, as logview.js loads it.
function loadEarlier(run, model, sink) {
  const before = model.earlierBefore(sink);
  assert.notEqual(before, null, "there are earlier lines to load");
  model.startEarlier();
  return model.prependEarlier(before, run.linesBefore(before), sink);
}

const numbers = (sink) => sink.shown.map((line) => line.n);
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

function assertShown(sink, run, from, to) {
  assert.deepEqual(numbers(sink), range(from, to));
  assert.deepEqual(sink.lines(), run.lines.slice(from - 1, to), "each line is the one printed");
}

test("pages of earlier lines continue above the tail without gap or repeat, down to line 1", () => {
  const run = new FakeRun();
  for (let k = 0; k < 5; k++) run.print(900);
  run.print(500); // 5,000 lines
  const { model, sink, clock } = open(run, { cap: 20_000 });
  assertShown(sink, run, 4001, 5000);
  let pages = 0;
  while (model.earlierBefore(sink) !== null) {
    assert.equal(loadEarlier(run, model, sink), PAGE);
    pages++;
    drain(model, sink, clock);
    assertShown(sink, run, 5001 - TAIL - pages * PAGE, 5000);
  }
  assert.equal(pages, 4);
  assert.equal(sink.keptScroll, 4, "each page keeps the reader's place");
  assert.equal(model.floor, 1, "the server said nothing comes before line 1");
  assert.equal(model.domLines, 5000);
  assert.ok(!model.detached);
  assert.equal(model.stats.earlier, 4000);
});

test("a page keeps each line's stream and time (the Timestamps toggle shows it)", () => {
  const run = new FakeRun();
  run.print(600, "stdout");
  run.print(600, "stderr");
  run.print(600, "stdout");
  const { model, sink } = open(run);
  loadEarlier(run, model, sink);
  assertShown(sink, run, 1, 1800);
  assert.ok(sink.shown.every((line) => line.at === AT));
});

test("nothing else is drawn while a page is on its way; live lines come after it", () => {
  const run = new FakeRun();
  run.print(3000);
  const { model, sink, clock } = open(run);
  model.stuck = false;
  const before = model.earlierBefore(sink);
  model.startEarlier();
  assert.equal(model.earlierBefore(sink), null, "one page at a time");
  model.addRaw(run.print(50)[1]);
  drain(model, sink, clock);
  assertShown(sink, run, 2001, 3000);
  assert.equal(model.prependEarlier(before, run.linesBefore(before), sink), PAGE);
  drain(model, sink, clock);
  assertShown(sink, run, 1001, 3050);
});

test("an answer for a view that changed meanwhile is not shown", () => {
  const run = new FakeRun();
  run.print(3000);
  const { model, sink } = open(run);
  const before = model.earlierBefore(sink);
  model.startEarlier();
  model.clear(sink); // as a flood does while the reader follows
  assert.equal(model.prependEarlier(before, run.linesBefore(before), sink), 0);
  assert.ok(!model.loadingEarlier);
  assert.deepEqual(sink.shown, []);
});

test("past the cap the newest lines make room: the view detaches, live output is not drawn below it", () => {
  const run = new FakeRun();
  run.print(5000);
  const { model, sink, clock } = open(run, { cap: 2500 });
  model.stuck = false; // the reader scrolled up
  loadEarlier(run, model, sink);
  assertShown(sink, run, 3001, 5000);
  assert.ok(!model.detached);
  loadEarlier(run, model, sink);
  assertShown(sink, run, 2001, 4500);
  assert.ok(model.detached);
  assert.equal(model.domLines, 2500);
  model.addRaw(run.print(100)[1]);
  drain(model, sink, clock);
  assertShown(sink, run, 2001, 4500);
  // Reading further back works the same way.
  loadEarlier(run, model, sink);
  assertShown(sink, run, 1001, 3500);
  assert.equal(sink.tailWanted, 0);
});

test("a reader reading loaded lines is not pushed by new output: past the cap the view detaches", () => {
  const run = new FakeRun();
  run.print(5000);
  const { model, sink, clock } = open(run, { cap: 2500 });
  model.stuck = false;
  loadEarlier(run, model, sink);
  for (let k = 0; k < 10; k++) {
    model.addRaw(run.print(100)[1]);
    clock.advance(16);
    model.frame(sink);
  }
  drain(model, sink, clock);
  assertShown(sink, run, 3001, 5500);
  assert.ok(model.detached, "the lines read stay; the newest are not drawn");
});

test("a reader who follows again after reading back is at the end as before", () => {
  const run = new FakeRun();
  run.print(5000);
  const { model, sink, clock } = open(run, { cap: 2500 });
  model.stuck = false;
  loadEarlier(run, model, sink);
  model.stuck = true; // back at the bottom before the cap was passed
  drain(model, sink, clock);
  model.addRaw(run.print(1000)[1]);
  drain(model, sink, clock);
  assertShown(sink, run, 3501, 6000);
  assert.ok(!model.detached);
});

suite("detached from the end", () => {
  // The page opened on a live run, the reader read back past the cap, output went on.
  function detachedPage() {
    const run = new FakeRun();
    for (let k = 0; k < 30; k++) run.print(100); // 3,000 lines
    const page = open(run, { cap: 2500 });
    const { model, sink, clock, logs } = page;
    const feed = new LogFeed(logs, { wait: async () => {} });
    let lastId = page.lastId;
    const live = (count) => {
      const [id, json] = run.print(count);
      lastId = id;
      feed.add(id, json);
      clock.advance(16);
      model.frame(sink);
    };
    for (let k = 0; k < 10; k++) live(100); // 4,000 lines, drawn
    assertShown(sink, run, 2001, 4000);
    model.stuck = false;
    loadEarlier(run, model, sink);
    assertShown(sink, run, 1001, 3500);
    assert.ok(model.detached);
    for (let k = 0; k < 5; k++) live(100); // not drawn
    assertShown(sink, run, 1001, 3500);
    return { ...page, run, feed, live, lastId: () => lastId };
  }

  test("following again asks for the newest lines once", () => {
    const { model, sink, clock } = detachedPage();
    model.stuck = true;
    drain(model, sink, clock);
    drain(model, sink, clock);
    assert.equal(sink.tailWanted, 1);
    assert.equal(model.earlierBefore(sink), null, "no earlier page while the tail is asked for");
  });

  test("live output while the fresh snapshot is fetched is neither lost nor shown twice", async () => {
    const { run, feed, live, lastId, model, sink, clock } = detachedPage();
    model.stuck = true;
    drain(model, sink, clock);
    assert.equal(sink.tailWanted, 1);
    // The fetch: three events arrive while it is on its way; the server's
    // snapshot holds the first two of them.
    let answer;
    const fetched = new Promise((resolve) => { answer = resolve; });
    const reloading = feed.reload(() => fetched, lastId());
    live(100);
    live(100);
    const snap = run.snapshot();
    live(100);
    answer(snap);
    assert.equal(await reloading, true);
    drain(model, sink, clock);
    assertShown(sink, run, 3701, 4800); // the snapshot's 1,000, then the event after it
    for (let k = 0; k < 3; k++) live(100);
    drain(model, sink, clock);
    assertShown(sink, run, 3701, 5100);
    assert.ok(model.stuck && !model.detached && !model.paused);
    assert.ok(sink.follows > 0, "the view follows the end again");
    // Events the snapshot holds, sent again by a reconnecting stream, are not shown twice.
    feed.add(run.events.length - 5, run.events[run.events.length - 6][1]);
    drain(model, sink, clock);
    assertShown(sink, run, 3701, 5100);
  });

  test("a snapshot older than the events the page has is asked for again", async () => {
    const { run, feed, live, lastId, model, sink, clock } = detachedPage();
    model.stuck = true;
    drain(model, sink, clock);
    const stale = run.snapshot();
    live(100);
    const answers = [stale, run.snapshot()];
    let asked = 0;
    assert.equal(await feed.reload(async () => answers[asked++], lastId()), true);
    assert.equal(asked, 2);
    drain(model, sink, clock);
    assertShown(sink, run, 3601, 4600);
  });

  test("a failed fetch is said, nothing is lost, and following again asks again", async () => {
    const { run, feed, live, lastId, model, sink, clock, logs } = detachedPage();
    model.stuck = true;
    drain(model, sink, clock);
    let fail;
    const failing = new Promise((_, reject) => { fail = reject; });
    const reloading = feed.reload(() => failing, lastId());
    live(100); // held, then passed on
    fail(new Error("the server did not answer"));
    assert.equal(await reloading, false);
    assert.deepEqual(logs.failures, ["Could not load the newest lines: the server did not answer."]);
    assert.ok(model.detached && !model.stuck, "still read back, not following");
    drain(model, sink, clock);
    assertShown(sink, run, 1001, 3500);
    model.stuck = true;
    drain(model, sink, clock);
    assert.equal(sink.tailWanted, 2);
    assert.equal(await feed.reload(async () => run.snapshot(), lastId()), true);
    live(100);
    drain(model, sink, clock);
    assertShown(sink, run, 3601, 4700);
  });
});
