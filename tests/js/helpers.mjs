// Shared by the Node tests: the fixtures (tests/js/make_fixtures.py writes
// them from the server's own code), the server's vocabulary, and a headless
// sink that shows a LogModel's lines the way logview.js does, without a DOM.

import fs from "node:fs";

import { advanceState } from "../../static/js/term.js";
import { makeVocabulary } from "../../static/js/vocabulary.js";

const FIXTURES = new URL("./fixtures/", import.meta.url);

export function fixture(name) {
  return JSON.parse(fs.readFileSync(new URL(name, FIXTURES), "utf8"));
}

export function fixtureNames(folder) {
  return fs.readdirSync(new URL(`${folder}/`, FIXTURES)).filter((name) => name.endsWith(".json")).sort();
}

export const vocabulary = makeVocabulary(fixture("vocabulary.json"));

// A clock the test moves: `now()` for the model, `advance(ms)`. With `tick`,
// each look at the clock also moves it (so time budgets run out).
export class FakeClock {
  constructor({ start = 1000, tick = 0 } = {}) {
    this.t = start;
    this.now = () => {
      this.t += tick;
      return this.t;
    };
  }

  advance(ms) {
    this.t += ms;
  }
}

// The sink of a LogModel (see static/js/logmodel.js) with lines as plain
// objects, in the order logview.js would show them.
export class HeadlessSink {
  constructor() {
    this.shown = []; // [{n, stream, text, partial, at, connected}], oldest first
    this.updates = 0;
    this.follows = 0;
    this.tailWanted = 0; // wantTail() calls
    this.keptScroll = 0; // prepends that keep the reader's place
  }

  line(n, stream, text, isOpen, at) {
    return { n, stream, text, partial: isOpen, at, connected: true };
  }

  append(entry, from, to, state, open) {
    for (let k = from; k < to; k++) {
      const isOpen = open !== null && k === open.index;
      const line = this.line(entry.base + k, entry.stream, entry.lines[k], isOpen, entry.at);
      if (isOpen) Object.assign(open, { el: line, state0: state });
      state = advanceState(entry.lines[k], state);
      this.shown.push(line);
    }
    return state;
  }

  prepend(pieces, { keepScroll = false } = {}) {
    if (keepScroll) this.keptScroll++;
    const block = [];
    for (const piece of pieces) {
      let state = piece.state;
      for (let k = piece.from; k < piece.to; k++) {
        const n = piece.base + k;
        const isOpen = piece.open !== null && piece.open.n === n;
        const line = this.line(n, piece.stream, piece.lines[k], isOpen, piece.at);
        if (isOpen) Object.assign(piece.open, { el: line, state0: state });
        state = advanceState(piece.lines[k], state);
        block.push(line);
      }
    }
    this.shown.unshift(...block);
  }

  rerender(open, partial) {
    const line = open.el;
    if (!line.connected) return null;
    line.text = open.text;
    line.partial = partial;
    return advanceState(open.text, open.state0);
  }

  clear() {
    for (const line of this.shown) line.connected = false;
    this.shown = [];
  }

  dropOldest(count) {
    const dropped = this.shown.splice(0, count);
    for (const line of dropped) line.connected = false;
    return dropped.length;
  }

  dropNewest(count) {
    const dropped = this.shown.splice(Math.max(0, this.shown.length - count), count);
    for (const line of dropped) line.connected = false;
    return dropped.length;
  }

  firstShown() {
    return this.shown.length ? this.shown[0].n : null;
  }

  wantTail() {
    this.tailWanted++;
  }

  update() {
    this.updates++;
  }

  follow() {
    this.follows++;
  }

  // What is shown, as the Python joiner's lines are written in the fixtures.
  lines() {
    return this.shown.map(({ n, stream, text, partial, at }) => ({ n, stream, text, partial, at }));
  }
}

// Frames until the model has nothing left to do (the clock moves a frame's
// worth each time, so floods end and backfills come as in a browser).
export function drain(model, sink, clock, { frameMs = 16, maxFrames = 10_000 } = {}) {
  let frames = 0;
  do {
    clock.advance(frameMs);
    model.frame(sink);
    frames++;
    if (frames > maxFrames) throw new Error("the model is still busy after many frames");
  } while (model.busy);
  return frames;
}
