// The live log without the DOM: `log` events in, numbered lines out, with
// partial lines joined per stream, the cap on shown lines, and floods skipped
// and filled in later. logview.js draws what this decides; Node's tests
// (tests/js/logmodel.test.mjs) drive it with a headless sink instead.
//
// How busy output stays cheap:
// - addRaw only queues the event's JSON text: no parsing and no DOM work,
//   however fast a run prints.
// - Once per animation frame (`frame`) the queue is parsed (within
//   PARSE_BUDGET_MS) and rendered (at most FRAME_LINES lines, within
//   RENDER_BUDGET_MS).
// - At most `cap` lines are shown; the sink's oldest go first.
// - When more lines wait than may be shown, output is coming faster than it
//   can be shown (a flood). Then the view is redrawn at most every
//   FLOOD_FRAME_MS; only the newest events are parsed (older ones holding
//   plain whole lines are skipped unparsed); all but the newest FLOOD_LINES
//   lines are skipped (only counted; colour changes still carry over), so
//   the view keeps up with the end of the output. The newest skipped lines
//   are kept (the store) and filled in above the others once it is quiet.
// - A reader who has scrolled up (not `stuck`) is left alone by a flood: the
//   view stays as it is until they follow again, then jumps to the end.
//
// Earlier lines, on demand: the page starts from the server's snapshot (the
// log's tail) and the reader loads the lines before the oldest shown, a page
// at a time (`prependEarlier`, from GET /api/runs/{id}/lines?before=N). While
// a page is on its way nothing else is drawn, so the oldest shown line stays
// the one it was asked before. When a page would pass the cap, the NEWEST
// shown lines are dropped instead of the oldest: the view no longer reaches
// the end (`detached`), so new output is not drawn below it (it would leave
// a gap). When the reader follows again, the model asks the page for the
// newest lines (sink.wantTail()); the page fetches a fresh snapshot and
// starts over from it (`resetTail`), holding the `log` events that arrive
// meanwhile and passing on only those after the snapshot's last event id:
// nothing is lost, nothing is shown twice. A reader who loaded earlier lines
// and reads them is not pushed around by new output either: past the cap the
// view detaches rather than dropping the lines at the top.
//
// The sink (logview.js's LogView, or the tests' headless one) shows lines:
//   append(entry, from, to, state, open) -> end state: show entry.lines[from..to)
//       (numbers entry.base + k, read at entry.at: the event's `at`, or null
//       in a log written before events had it) after the others, the first in SGR state
//       `state`; `open` (or null) is the open line's record when it is among
//       them: the sink sets its `el` (a handle) and `state0` (its state).
//   prepend(pieces): show [{stream, lines, base, at, from, to, state, open}] above
//       the others, oldest first (`open` as for append, when not shown yet).
//   rerender(open, partial) -> end state, or null when open.el is no longer
//       shown: the open line's text (open.text) grew.
//   clear(); dropOldest(count), dropNewest(count) -> how many were dropped;
//   firstShown() -> the number of the oldest line shown (null: none);
//   update(): after each frame (counts, marker); follow(): scroll to the end;
//   wantTail(): the view is detached and the reader follows again: the page
//       should call resetTail with a fresh snapshot (or tailFailed).

import { MAX_SCAN, PLAIN, advanceState } from "./term.js";
import { formatCount } from "./format.js";

export const PARSE_BUDGET_MS = 5;
export const RENDER_BUDGET_MS = 8;
export const SLICE = 100; // lines rendered between two looks at the clock
export const FRAME_LINES = 500; // at most this many new lines laid out per frame
// ... and at most about this many characters of them (a line counts for no
// more than term.js lays out of it, MAX_SCAN): huge lines take frames of their own.
export const FRAME_CHARS = 2 * MAX_SCAN;
export const FLOOD_LINES = 300; // lines kept for the screen when a flood is skipped
export const BACKFILL_LINES = 500; // lines filled in above, per quiet frame
export const FLOOD_FRAME_MS = 100; // during a flood the view is redrawn at most this often
export const QUIET_MS = 300; // no new lines for this long: the flood is over
const LAZY_CHARS = 256 * 1024; // this much waiting output is parsed the flood way
// How the server writes a `log` event's data (orjson keeps this key order):
// a fast look at events that a flood skips anyway. Anything else is parsed.
const PLAIN_EVENT = /^\{"stream":"(stdout|stderr|tty)",(?:"at":"[^"]*",)?"first":\d+,"lines":\[/;
const WHOLE_LINES = '],"partial":false}';
const ESCAPED_ESC = /\\u001b/i;

export class LogModel {
  constructor({ cap = 5000, clock = () => performance.now() } = {}) {
    this.cap = cap;
    this.clock = clock;
    this.raw = []; // `log` event data not parsed yet (JSON text)
    this.rawHead = 0;
    this.rawChars = 0;
    this.flooding = false;
    this.paused = false; // a flood came while the reader was scrolled up
    this.stuck = true; // the reader follows the end
    // Earlier lines (see above):
    this.loadingEarlier = false; // a page of earlier lines is on its way
    this.detached = false; // newest lines dropped for earlier ones: the view ends before the output does
    this.tailWanted = false; // detached, the reader follows: the newest lines were asked for
    this.readingBack = false; // earlier lines were loaded and the reader has not followed since
    this.floor = 1; // no line is numbered below this (the server said so, or lines start at 1)
    // Parsed, not shown yet, oldest first:
    //   {kind: "lines", stream, lines, base, start, partial, at}: lines[start..] are
    //     lines base+start.., the last one open when `partial`, read at `at`
    //   {kind: "cont", stream, n, text, partial}: the rest of open line n
    this.queue = [];
    this.head = 0;
    this.queuedLines = 0;
    // Skipped in a flood but among the newest: [{stream, lines, base, at, from, to, state0}]
    this.store = [];
    this.storeLines = 0;
    this.ingestOpen = new Map(); // stream -> number of its open line, as events arrive
    this.open = new Map(); // stream -> {n, el, text, state0, lines, index}: its open line
    this.sgr = { stdout: PLAIN, stderr: PLAIN, tty: PLAIN };
    this.total = 0; // highest line number seen
    this.finalTotal = null; // the run's own count, once it is done
    this.domLines = 0; // lines the sink shows
    this.lastArrival = 0;
    this.lastFloodDraw = -Infinity;
    this.stats = {
      frames: 0, maxFrameMs: 0, parseMs: 0, rendered: 0, skipped: 0, unparsed: 0, floods: 0, backfilled: 0,
      earlier: 0, resets: 0,
    };
  }

  // -- input ----------------------------------------------------------------------------

  // Lines of the server's snapshot: [{n, stream, text, partial, at}], oldest first;
  // `earlier` false when the server says no line comes before them.
  loadSnapshot(lines, total, earlier = true) {
    if (earlier === false) this.floor = lines.length ? lines[0].n : (total || 0) + 1;
    for (const line of lines) {
      this.add({ stream: line.stream, at: line.at, first: line.n, lines: [line.text], partial: line.partial });
    }
    this.total = Math.max(this.total, total || 0);
  }

  // One `log` event's data as it came (JSON text): parsed in a later frame.
  addRaw(json) {
    this.raw.push(json);
    this.rawChars += json.length;
    this.lastArrival = this.clock();
  }

  // One `log` event's data (docs/api.md).
  add(data) {
    const { stream, first, lines, partial } = data;
    const at = data.at ?? null; // when its first line was read (RFC 3339)
    if (!lines.length) return;
    let start = 0;
    const open = this.ingestOpen.get(stream);
    if (open !== undefined) {
      this.ingestOpen.delete(stream);
      if (open === first) {
        this.queue.push({ kind: "cont", stream, n: first, text: lines[0], partial: partial && lines.length === 1 });
        start = 1;
      }
    }
    if (start < lines.length) {
      this.queue.push({ kind: "lines", stream, lines, base: first, start, partial, at });
      this.queuedLines += lines.length - start;
    }
    if (partial) this.ingestOpen.set(stream, first + lines.length - 1);
    this.total = Math.max(this.total, first + lines.length - 1);
  }

  // The run is done: its own line count is the last word.
  finish(logLines) {
    this.finalTotal = logLines;
  }

  // The number of lines to tell of.
  get shownTotal() {
    return this.finalTotal ?? this.total;
  }

  // Work is left for another frame.
  get busy() {
    const holding = this.detached || this.loadingEarlier;
    return this.rawHead < this.raw.length
      || (this.head < this.queue.length && !holding && !(this.paused && !this.stuck))
      || (this.storeLines > 0 && this.domLines < this.cap && !holding);
  }

  // -- one frame ------------------------------------------------------------------------

  frame(sink) {
    const t0 = this.clock();
    // In a flood the view is redrawn only every FLOOD_FRAME_MS; meanwhile the
    // events only pile up, unparsed.
    if (this.flooding && t0 - this.lastFloodDraw < FLOOD_FRAME_MS) return;
    const wasStuck = this.stuck;
    const lazy = this.flooding || this.rawChars > LAZY_CHARS;
    if (lazy) this.parseNewest();
    else this.parseInOrder(t0);
    const t1 = this.clock();
    this.flooding = this.queuedLines > this.cap;
    // Detached, or a page of earlier lines on its way: new output waits.
    const holding = this.detached || this.loadingEarlier;
    if (this.flooding) {
      this.lastFloodDraw = t0;
      if (this.stuck && !holding) {
        this.skipFlood(sink);
        this.paused = false;
      } else {
        // The reader has scrolled up: leave what they read alone. Only the
        // newest `cap` lines wait; the view jumps to them when they follow again.
        this.skipOldest(this.queuedLines - this.cap, 0, sink);
        this.paused = true;
      }
    }
    if (this.stuck) this.readingBack = false;
    if (this.detached) {
      if (this.stuck && !this.tailWanted) {
        this.tailWanted = true;
        sink.wantTail();
      }
    } else if (this.paused && this.stuck && !this.loadingEarlier) {
      this.clear(sink);
      this.paused = false;
    }
    const t2 = this.clock();
    const rendered = this.paused || holding ? 0 : this.renderQueue(sink, t2);
    const t3 = this.clock();
    if (!rendered && !holding && this.head >= this.queue.length && this.storeLines) {
      if (t0 - this.lastArrival >= QUIET_MS) this.backfill(sink);
    }
    const t4 = this.clock();
    if (!holding) this.trim(sink);
    sink.update();
    const t5 = this.clock();
    if (wasStuck && this.stuck && !this.detached) sink.follow();
    const t6 = this.clock();
    this.stats.frames++;
    this.stats.parseMs += t1 - t0;
    if (t6 - t0 > this.stats.maxFrameMs) {
      this.stats.maxFrameMs = t6 - t0;
      // Where the slowest frame went (parse, skip, render, backfill, trim, layout), in ms.
      this.stats.slowest = [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5].map((x) => Math.round(x));
    }
  }

  // Parse the waiting events, oldest first, for at most PARSE_BUDGET_MS.
  parseInOrder(t0) {
    while (this.rawHead < this.raw.length) {
      this.take(this.rawHead, JSON.parse(this.raw[this.rawHead]));
      if (this.clock() - t0 > PARSE_BUDGET_MS) break;
    }
    this.compactRaw();
  }

  // A flood: parse only the newest events, enough for more than `cap` lines;
  // the older ones are skipped unparsed when all they hold is plain, whole
  // lines (no escape sequence, not ending in an open line, not continuing
  // one), which is what a flood is made of. Those would be skipped unseen
  // anyway. (A continuation is parsed: its line may be one the reader sees.)
  parseNewest() {
    const parsed = [];
    let lines = 0;
    let k = this.raw.length - 1;
    for (; k >= this.rawHead && lines <= this.cap; k--) {
      const data = JSON.parse(this.raw[k]);
      parsed.push(data);
      lines += data.lines.length;
    }
    for (let i = this.rawHead; i <= k; i++) {
      const text = this.raw[i];
      const head = PLAIN_EVENT.exec(text);
      if (head && text.endsWith(WHOLE_LINES) && !this.ingestOpen.has(head[1]) && !ESCAPED_ESC.test(text)) {
        this.rawChars -= text.length;
        this.raw[i] = null;
        this.stats.unparsed++;
      } else {
        this.take(i, JSON.parse(text));
      }
    }
    for (let i = parsed.length - 1; i >= 0; i--) {
      this.take(k + parsed.length - i, parsed[i]);
    }
    this.rawHead = this.raw.length;
    this.compactRaw();
  }

  take(index, data) {
    this.rawChars -= this.raw[index].length;
    this.raw[index] = null;
    if (index === this.rawHead) this.rawHead++;
    this.add(data);
  }

  compactRaw() {
    if (this.rawHead >= this.raw.length) {
      this.raw = [];
      this.rawHead = 0;
      this.rawChars = 0;
    } else if (this.rawHead > 1024) {
      this.raw = this.raw.slice(this.rawHead);
      this.rawHead = 0;
    }
  }

  renderQueue(sink, t1) {
    let rendered = 0;
    let chars = 0;
    while (this.head < this.queue.length && rendered < FRAME_LINES && chars < FRAME_CHARS) {
      const entry = this.queue[this.head];
      if (entry.kind === "cont") {
        chars += Math.min(entry.text.length, MAX_SCAN);
        this.continueLine(entry, sink);
        this.head++;
      } else {
        let end = Math.min(entry.lines.length, entry.start + SLICE, entry.start + FRAME_LINES - rendered);
        for (let k = entry.start; k < end; k++) {
          chars += Math.min(entry.lines[k].length, MAX_SCAN);
          if (chars >= FRAME_CHARS) end = k + 1; // this line is the frame's last
        }
        const count = end - entry.start;
        this.append(entry, entry.start, end, sink);
        entry.start = end;
        this.queuedLines -= count;
        rendered += count;
        if (entry.start >= entry.lines.length) this.head++;
      }
      if (this.clock() - t1 > RENDER_BUDGET_MS) break;
    }
    if (this.head >= this.queue.length) {
      this.queue = [];
      this.head = 0;
    } else if (this.head > 1024) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    return rendered;
  }

  // -- lines ------------------------------------------------------------------------------

  // Lines entry.lines[from..to) after the shown ones.
  append(entry, from, to, sink) {
    const stream = entry.stream;
    const last = entry.lines.length - 1;
    let open = null;
    if (entry.partial && from <= last && last < to) {
      open = { n: entry.base + last, el: null, text: entry.lines[last], state0: null, lines: entry.lines, index: last };
      this.open.set(stream, open);
    }
    this.sgr[stream] = sink.append(entry, from, to, this.sgr[stream] || PLAIN, open);
    this.domLines += to - from;
    this.stats.rendered += to - from;
  }

  // The rest of an open (partial) line arrived: complete it in place.
  continueLine(entry, sink) {
    const open = this.open.get(entry.stream);
    if (!open || open.n !== entry.n) return; // its line is long gone
    open.text += entry.text;
    if (open.lines) open.lines[open.index] = open.text; // for a backfill
    if (!entry.partial) this.open.delete(entry.stream);
    const end = open.el ? sink.rerender(open, entry.partial) : null;
    this.sgr[entry.stream] = end ?? advanceState(entry.text, this.sgr[entry.stream]);
  }

  clear(sink) {
    sink.clear();
    this.domLines = 0;
    this.dropStore();
  }

  dropStore() {
    this.store = [];
    this.storeLines = 0;
  }

  // Keep at most `cap` lines shown: the oldest go, unless the reader is
  // reading earlier lines they loaded (then the newest go, and the view detaches).
  trim(sink) {
    const excess = this.domLines - this.cap;
    if (excess > 0) {
      if (this.readingBack && !this.stuck) {
        this.domLines -= sink.dropNewest(excess);
        this.detach();
      } else {
        this.domLines -= sink.dropOldest(excess);
      }
    }
    if (this.domLines >= this.cap && this.storeLines) this.dropStore(); // nothing more fits above
  }

  // -- earlier lines ----------------------------------------------------------------------

  // The line number to ask earlier lines before (the oldest shown), or null
  // when there are none to ask for, or not now.
  earlierBefore(sink) {
    if (this.loadingEarlier || this.tailWanted) return null;
    const first = sink.firstShown();
    return first !== null && first > this.floor ? first : null;
  }

  // A page of earlier lines is asked for, before line `before`: nothing else
  // is drawn until `prependEarlier` or `earlierFailed`.
  startEarlier() {
    this.loadingEarlier = true;
  }

  earlierFailed() {
    this.loadingEarlier = false;
  }

  // The server's answer to GET /lines?before=`before`: {lines, first, earlier}
  // (lines oldest first). Shown above the others when the oldest shown line is
  // still `before`; past the cap the newest shown lines make room (the view
  // detaches). Returns the number of lines shown (0: none, or the view changed).
  prependEarlier(before, { lines, first, earlier }, sink) {
    this.loadingEarlier = false;
    if (sink.firstShown() !== before) return 0; // cleared or trimmed meanwhile: ask again
    if (!earlier) this.floor = first;
    let fresh = lines.filter((line) => line.n < before);
    if (fresh.length > this.cap) fresh = fresh.slice(fresh.length - this.cap);
    if (!fresh.length) return 0;
    this.dropStore(); // what a flood skipped above the shown lines is among these
    const excess = this.domLines + fresh.length - this.cap;
    if (excess > 0) {
      this.domLines -= sink.dropNewest(excess);
      this.detach();
    }
    // A page starts in the plain state: the colours of lines above it are not known.
    const sgr = {};
    const pieces = fresh.map((line) => {
      const state = sgr[line.stream] || PLAIN;
      sgr[line.stream] = advanceState(line.text, state);
      // An earlier line still open (on a stream quiet since) is drawn as a whole one.
      return { stream: line.stream, lines: [line.text], base: line.n, at: line.at ?? null, from: 0, to: 1, state, open: null };
    });
    sink.prepend(pieces, { keepScroll: true });
    this.domLines += fresh.length;
    this.readingBack = true;
    this.stats.earlier += fresh.length;
    return fresh.length;
  }

  // The newest lines were dropped: the view no longer reaches the end.
  detach() {
    if (this.detached) return;
    this.detached = true;
    this.tailWanted = false;
    this.stuck = false;
    this.dropStore();
  }

  // A fresh snapshot of the log's tail (after wantTail): start over from it.
  // Output queued meanwhile is dropped: the snapshot holds it (the page passes
  // on only the `log` events after the snapshot's last event id).
  resetTail(lines, total, earlier, sink) {
    this.clear(sink);
    this.raw = [];
    this.rawHead = 0;
    this.rawChars = 0;
    this.queue = [];
    this.head = 0;
    this.queuedLines = 0;
    this.dropStore();
    this.ingestOpen.clear();
    this.open.clear();
    this.sgr = { stdout: PLAIN, stderr: PLAIN, tty: PLAIN };
    this.flooding = false;
    this.paused = false;
    this.detached = false;
    this.tailWanted = false;
    this.readingBack = false;
    this.loadingEarlier = false;
    this.stats.resets++;
    this.loadSnapshot(lines, total, earlier);
  }

  // The newest lines could not be fetched: the view stays detached and the
  // reader not following; following again asks again.
  tailFailed() {
    this.tailWanted = false;
    this.stuck = false;
  }

  // -- floods -----------------------------------------------------------------------------

  skipFlood(sink) {
    this.stats.floods++;
    this.clear(sink); // every line shown is older than what waits
    this.skipOldest(this.queuedLines - FLOOD_LINES, this.cap - FLOOD_LINES, sink);
  }

  // Skip the `count` oldest waiting lines; keep the newest `keep` of them in
  // the store, for a backfill.
  skipOldest(count, keep, sink) {
    let excess = count;
    const keepFrom = count - keep; // skipped lines from this one on are kept
    let skipped = 0;
    while (excess > 0 && this.head < this.queue.length) {
      const entry = this.queue[this.head];
      if (entry.kind === "cont") {
        this.continueLine(entry, sink);
        this.head++;
        continue;
      }
      const take = Math.min(excess, entry.lines.length - entry.start);
      const from = entry.start;
      const to = from + take;
      const stateAtFrom = this.sgr[entry.stream] || PLAIN;
      let state = stateAtFrom;
      const last = entry.lines.length - 1;
      for (let k = from; k < to; k++) {
        if (k === last && entry.partial) {
          this.open.set(entry.stream, {
            n: entry.base + k, el: null, text: entry.lines[k], state0: state, lines: entry.lines, index: k,
          });
        }
        state = advanceState(entry.lines[k], state);
      }
      this.sgr[entry.stream] = state;
      // The part of this run of lines that is among the newest `cap`.
      const keepStart = Math.max(from, from + (keepFrom - skipped));
      if (keepStart < to) {
        let state0 = stateAtFrom;
        for (let k = from; k < keepStart; k++) state0 = advanceState(entry.lines[k], state0);
        this.store.push({
          stream: entry.stream, lines: entry.lines, base: entry.base, at: entry.at, from: keepStart, to, state0,
        });
        this.storeLines += to - keepStart;
      }
      skipped += take;
      entry.start = to;
      excess -= take;
      this.queuedLines -= take;
      if (entry.start >= entry.lines.length) this.head++;
    }
    this.stats.skipped += skipped;
  }

  // Quiet again: fill in the newest skipped lines above the ones shown.
  backfill(sink) {
    let room = Math.min(this.cap - this.domLines, BACKFILL_LINES);
    if (room <= 0 || !this.storeLines) {
      if (room <= 0) this.dropStore();
      return;
    }
    const pieces = []; // oldest first
    while (room > 0 && this.store.length) {
      const seg = this.store[this.store.length - 1];
      const from = Math.max(seg.from, seg.to - room);
      let state = seg.state0;
      for (let k = seg.from; k < from; k++) state = advanceState(seg.lines[k], state);
      const open = this.open.get(seg.stream);
      const openHere = open !== undefined && !open.el && open.n >= seg.base + from && open.n < seg.base + seg.to;
      pieces.unshift({
        stream: seg.stream, lines: seg.lines, base: seg.base, at: seg.at, from, to: seg.to, state,
        open: openHere ? open : null,
      });
      const count = seg.to - from;
      room -= count;
      this.storeLines -= count;
      this.domLines += count;
      this.stats.backfilled += count;
      seg.to = from;
      if (seg.to <= seg.from) this.store.pop();
    }
    sink.prepend(pieces);
  }
}

// The page's `log` events on their way to the log view (logview.js LogView,
// or anything with addRaw, resetTail and tailFailed), and the start over from a
// fresh snapshot when the view asks for its newest lines again (wantTail):
// `log` events that arrive while the snapshot is fetched are held, then only
// those after its last event id are passed on. Every event the page got
// before the fetch began is in the snapshot (it is asked again, briefly, if
// it is older than those). Nothing is lost, nothing is shown twice.
export class LogFeed {
  constructor(logs, { wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms)), retries = 5 } = {}) {
    this.logs = logs;
    this.wait = wait;
    this.retries = retries;
    this.held = null; // [[event id, data as JSON text]] while a snapshot is fetched
    this.through = 0; // `log` events up to this id are in the snapshot the log started over from
  }

  // A `log` event of the stream: its id and its data as it came.
  add(id, json) {
    if (this.held) this.held.push([id, json]);
    else if (!id || id > this.through) this.logs.addRaw(json);
  }

  // Start the log over from `fetchSnapshot()` (a Promise of the snapshot the
  // run page embeds); `lastId` is the last event id the page got. Resolves to
  // whether it did (when not, the log view was told why).
  async reload(fetchSnapshot, lastId) {
    if (this.held) return false;
    this.held = [];
    try {
      let fresh = await fetchSnapshot();
      for (let attempt = 1; fresh.last_event_id < lastId; attempt++) {
        if (attempt > this.retries) throw new Error("the server's snapshot is behind this page");
        await this.wait(100 * attempt);
        fresh = await fetchSnapshot();
      }
      const later = this.held.filter(([id]) => !id || id > fresh.last_event_id);
      this.held = null;
      this.through = Math.max(this.through, fresh.last_event_id);
      this.logs.resetTail(fresh.lines, fresh.total_lines, fresh.earlier);
      for (const [, json] of later) this.logs.addRaw(json);
      return true;
    } catch (err) {
      const waiting = this.held;
      this.held = null;
      for (const [id, json] of waiting) this.add(id, json);
      const why = String((err && err.message) || err || "unknown error").replace(/\.$/, "");
      this.logs.tailFailed(`Could not load the newest lines: ${why}.`);
      return false;
    }
  }
}

// The log filter: a case-insensitive substring, or with `regex` a regular
// expression (also case-insensitive). {test, error}: `test(text)` says whether
// a line matches (null: no filter); `error` tells why a pattern is invalid
// (then nothing is filtered). Never throws.
export const MAX_FILTER_CHARS = 1000;

export function lineMatcher(query, regex = false) {
  const q = regex ? query : query.trim().toLowerCase();
  if (!q) return { test: null, error: null };
  if (q.length > MAX_FILTER_CHARS) {
    return { test: null, error: `The filter is longer than ${MAX_FILTER_CHARS} characters.` };
  }
  if (!regex) return { test: (text) => text.toLowerCase().includes(q), error: null };
  let re;
  try {
    re = new RegExp(q, "i");
  } catch (err) {
    const detail = String((err && err.message) || err).replace(/^Invalid regular expression: /, "");
    return { test: null, error: `Invalid regular expression: ${detail}` };
  }
  return { test: (text) => re.test(text), error: null };
}

// What the log's marker and info line say.
// `first`/`last`: the numbers of the first and last lines shown (null: none).
export function describe({ total, first, last, paused, shown, filter, matches }) {
  const earlier = first === null ? total : first - 1;
  const marker = earlier > 0
    ? `${formatCount(earlier)} earlier ${earlier === 1 ? "line is" : "lines are"} not shown`
    : null;
  let info = `${formatCount(total)} ${total === 1 ? "line" : "lines"}`;
  if (paused) {
    const newer = total - (last ?? 0);
    info += ` · ${formatCount(newer)} newer not shown while you read: follow to see the end`;
  } else if (earlier > 0) info += ` · showing the last ${formatCount(shown)}`;
  if (filter) info += ` · ${formatCount(matches)} matching “${filter}”`;
  return { marker, info };
}
