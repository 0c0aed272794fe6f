// The live log: numbered lines, stdout/stderr apart, partial lines completed
// in place, a bounded DOM, and "follow" that only sticks while the reader is
// at the bottom.
//
// How busy output stays cheap:
// - A `log` event handler only queues the event's JSON text: no parsing and
//   no DOM work, however fast a run prints.
// - Once per animation frame the queue is parsed (within PARSE_BUDGET_MS)
//   and rendered (at most FRAME_LINES lines, within RENDER_BUDGET_MS).
// - The DOM holds at most `cap` lines, in chunks whose rendering the browser
//   skips while they are off screen (content-visibility), and a marker says
//   how many earlier lines are only in the full log.
// - When more lines wait than the DOM may hold, output is coming faster than
//   it can be shown (a flood). Then the view is redrawn at most every
//   FLOOD_FRAME_MS; only the newest events are parsed (older ones holding
//   plain whole lines are skipped unparsed); all but the newest FLOOD_LINES
//   lines are skipped (only counted; colour changes still carry over), so
//   the view keeps up with the end of the output. The newest skipped lines
//   are kept (not as DOM) and filled in above the others once it is quiet.
// - A reader who has scrolled up is left alone by a flood: the view stays as
//   it is until they follow again, then jumps to the end.

import { PLAIN, advanceState, renderLine } from "./term.js";
import { formatCount } from "./format.js";

const PARSE_BUDGET_MS = 5;
const RENDER_BUDGET_MS = 8;
const SLICE = 100; // lines rendered between two looks at the clock
const FRAME_LINES = 500; // at most this many new lines laid out per frame
const FLOOD_LINES = 300; // lines kept for the screen when a flood is skipped
const BACKFILL_LINES = 500; // lines filled in above, per quiet frame
const FLOOD_FRAME_MS = 100; // during a flood the view is redrawn at most this often
const QUIET_MS = 300; // no new lines for this long: the flood is over
const LAZY_CHARS = 256 * 1024; // this much waiting output is parsed the flood way
// How the server writes a `log` event's data (orjson keeps this key order):
// a fast look at events that a flood skips anyway. Anything else is parsed.
const PLAIN_EVENT = /^\{"stream":"(stdout|stderr|tty)","first":\d+,"lines":\[/;
const WHOLE_LINES = '],"partial":false}';
const ESCAPED_ESC = /\\u001b/i;
const BOTTOM_SLACK_PX = 8;

export class LogView {
  constructor({ scroller, body, marker, markerText, info, followButton, onTotal = null, cap = 5000, chunkSize = 200 }) {
    this.onTotal = onTotal;
    this.scroller = scroller;
    this.body = body;
    this.marker = marker;
    this.markerText = markerText;
    this.info = info;
    this.followButton = followButton;
    this.cap = cap;
    this.chunkSize = chunkSize;

    this.raw = []; // `log` event data not parsed yet (JSON text)
    this.rawHead = 0;
    this.rawChars = 0;
    this.flooding = false;
    this.paused = false; // a flood came while the reader was scrolled up
    // Parsed, not shown yet, oldest first:
    //   {kind: "lines", stream, lines, base, start, partial}: lines[start..] are
    //     lines base+start.., the last one open when `partial`
    //   {kind: "cont", stream, n, text, partial}: the rest of open line n
    this.queue = [];
    this.head = 0;
    this.queuedLines = 0;
    // Skipped in a flood but among the newest: [{stream, lines, base, from, to, state0}]
    this.store = [];
    this.storeLines = 0;
    this.ingestOpen = new Map(); // stream -> number of its open line, as events arrive
    this.open = new Map(); // stream -> {n, el, text, state0, lines, index}: its open line
    this.sgr = { stdout: PLAIN, stderr: PLAIN, tty: PLAIN };
    this.total = 0; // highest line number seen
    this.finalTotal = null; // the run's own count, once it is done
    this.domLines = 0;
    this.chunks = []; // chunk elements, oldest first
    this.filter = "";
    this.matches = 0;
    this.stuck = true;
    this.scheduled = false;
    this.inFrame = false;
    this.lineHeight = 0;
    this.lastArrival = 0;
    this.lastFloodDraw = -Infinity;
    this.stats = {
      frames: 0, maxFrameMs: 0, parseMs: 0, rendered: 0, skipped: 0, unparsed: 0, floods: 0, backfilled: 0,
    };

    scroller.addEventListener("scroll", () => this.setStuck(this.atBottom()), { passive: true });
    scroller.addEventListener("wheel", (e) => { if (e.deltaY < 0) this.setStuck(false); }, { passive: true });
    scroller.addEventListener("keydown", (e) => {
      if (["ArrowUp", "PageUp", "Home"].includes(e.key)) this.setStuck(false);
    });
    if (followButton) {
      followButton.addEventListener("click", () => {
        this.setStuck(!this.stuck);
        if (this.stuck) this.scrollToBottom();
      });
    }
  }

  // -- input ----------------------------------------------------------------------------

  // Lines of the server's snapshot: [{n, stream, text, partial}], oldest first.
  loadSnapshot(lines, total) {
    for (const line of lines) {
      this.add({ stream: line.stream, first: line.n, lines: [line.text], partial: line.partial });
    }
    this.total = Math.max(this.total, total || 0);
    this.schedule();
  }

  // One `log` event's data as it came (JSON text): parsed in the next frame.
  addRaw(json) {
    this.raw.push(json);
    this.rawChars += json.length;
    this.lastArrival = performance.now();
    this.schedule();
  }

  // One `log` event's data (docs/api.md).
  add(data) {
    const { stream, first, lines, partial } = data;
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
      this.queue.push({ kind: "lines", stream, lines, base: first, start, partial });
      this.queuedLines += lines.length - start;
    }
    if (partial) this.ingestOpen.set(stream, first + lines.length - 1);
    this.total = Math.max(this.total, first + lines.length - 1);
    this.schedule();
  }

  // The run is done: its own line count is the last word.
  finish(logLines) {
    this.finalTotal = logLines;
    this.schedule();
  }

  get busy() {
    return this.rawHead < this.raw.length
      || (this.head < this.queue.length && !(this.paused && !this.stuck))
      || (this.storeLines > 0 && this.domLines < this.cap);
  }

  schedule() {
    if (this.scheduled || this.inFrame) return;
    this.scheduled = true;
    requestAnimationFrame(() => this.frame());
  }

  // -- one frame ------------------------------------------------------------------------

  frame() {
    this.scheduled = false;
    const t0 = performance.now();
    // In a flood the view is redrawn only every FLOOD_FRAME_MS; meanwhile the
    // events only pile up, unparsed.
    if (this.flooding && t0 - this.lastFloodDraw < FLOOD_FRAME_MS) {
      if (this.busy) this.schedule();
      return;
    }
    this.inFrame = true;
    const wasStuck = this.stuck;
    const lazy = this.flooding || this.rawChars > LAZY_CHARS;
    if (lazy) this.parseNewest();
    else this.parseInOrder(t0);
    const t1 = performance.now();
    this.flooding = this.queuedLines > this.cap;
    if (this.flooding) {
      this.lastFloodDraw = t0;
      if (this.stuck) {
        this.skipFlood();
        this.paused = false;
      } else {
        // The reader has scrolled up: leave what they read alone. Only the
        // newest `cap` lines wait; the view jumps to them when they follow again.
        this.skipOldest(this.queuedLines - this.cap, 0);
        this.paused = true;
      }
    }
    if (this.paused && this.stuck) {
      this.clearDom();
      this.store = [];
      this.storeLines = 0;
      this.paused = false;
    }
    const t2 = performance.now();
    const rendered = this.paused ? 0 : this.renderQueue(t2);
    const t3 = performance.now();
    if (!rendered && this.head >= this.queue.length && this.storeLines) {
      if (t0 - this.lastArrival >= QUIET_MS) this.backfill();
    }
    const t4 = performance.now();
    this.trim();
    this.updateInfo();
    const t5 = performance.now();
    if (wasStuck && this.stuck) this.scrollToBottom();
    const t6 = performance.now();
    this.stats.frames++;
    this.stats.parseMs += t1 - t0;
    if (t6 - t0 > this.stats.maxFrameMs) {
      this.stats.maxFrameMs = t6 - t0;
      // Where the slowest frame went (parse, skip, render, backfill, trim, layout), in ms.
      this.stats.slowest = [t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5].map((x) => Math.round(x));
    }
    this.inFrame = false;
    if (this.busy) this.schedule();
  }

  // Parse the waiting events, oldest first, for at most PARSE_BUDGET_MS.
  parseInOrder(t0) {
    while (this.rawHead < this.raw.length) {
      this.take(this.rawHead, JSON.parse(this.raw[this.rawHead]));
      if (performance.now() - t0 > PARSE_BUDGET_MS) break;
    }
    this.compactRaw();
  }

  // A flood: parse only the newest events, enough for more than `cap` lines;
  // the older ones are skipped unparsed when all they hold is plain, whole
  // lines (no escape sequence, not ending in an open line), which is what a
  // flood is made of. Those would be skipped unseen anyway.
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
      if (head && text.endsWith(WHOLE_LINES) && !ESCAPED_ESC.test(text)) {
        this.ingestOpen.delete(head[1]); // whole lines end any open line of their stream
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

  renderQueue(t1) {
    let rendered = 0;
    while (this.head < this.queue.length && rendered < FRAME_LINES) {
      const entry = this.queue[this.head];
      if (entry.kind === "cont") {
        this.continueLine(entry);
        this.head++;
      } else {
        const end = Math.min(entry.lines.length, entry.start + SLICE, entry.start + FRAME_LINES - rendered);
        const count = end - entry.start;
        this.append(entry, entry.start, end);
        entry.start = end;
        this.queuedLines -= count;
        rendered += count;
        if (entry.start >= entry.lines.length) this.head++;
      }
      if (performance.now() - t1 > RENDER_BUDGET_MS) break;
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

  // -- floods -----------------------------------------------------------------------------

  skipFlood() {
    this.stats.floods++;
    this.clearDom(); // every line in it is older than what waits
    this.store = [];
    this.storeLines = 0;
    this.skipOldest(this.queuedLines - FLOOD_LINES, this.cap - FLOOD_LINES);
  }

  // Skip the `count` oldest waiting lines; keep the newest `keep` of them in
  // the store, for a backfill.
  skipOldest(count, keep) {
    let excess = count;
    const keepFrom = count - keep; // skipped lines from this one on are kept
    let skipped = 0;
    while (excess > 0 && this.head < this.queue.length) {
      const entry = this.queue[this.head];
      if (entry.kind === "cont") {
        this.continueLine(entry);
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
        this.store.push({ stream: entry.stream, lines: entry.lines, base: entry.base, from: keepStart, to, state0 });
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
  backfill() {
    let room = Math.min(this.cap - this.domLines, BACKFILL_LINES);
    if (room <= 0 || !this.storeLines) {
      if (room <= 0) {
        this.store = [];
        this.storeLines = 0;
      }
      return;
    }
    const before = this.chunks[0] || null;
    const block = [];
    while (room > 0 && this.store.length) {
      const seg = this.store[this.store.length - 1];
      const from = Math.max(seg.from, seg.to - room);
      let state = seg.state0;
      for (let k = seg.from; k < from; k++) state = advanceState(seg.lines[k], state);
      const fragment = document.createDocumentFragment();
      for (let k = from; k < seg.to; k++) {
        const n = seg.base + k;
        const open = this.open.get(seg.stream);
        const isOpen = open !== undefined && open.n === n && !open.el;
        const el = this.lineElement(n, seg.stream, seg.lines[k], state, isOpen);
        if (isOpen) Object.assign(open, { el, state0: state });
        state = el.endState;
        fragment.append(el);
      }
      block.unshift(fragment);
      const count = seg.to - from;
      room -= count;
      this.storeLines -= count;
      this.domLines += count;
      this.stats.backfilled += count;
      seg.to = from;
      if (seg.to <= seg.from) this.store.pop();
    }
    const chunk = document.createElement("div");
    chunk.className = "chunk";
    chunk.append(...block);
    this.body.insertBefore(chunk, before);
    this.chunks.unshift(chunk);
    this.sealChunk(chunk);
  }

  // -- lines ------------------------------------------------------------------------------

  lineElement(n, stream, text, state, isOpen) {
    const el = document.createElement("div");
    el.className = isOpen ? `ln ${stream} partial` : `ln ${stream}`;
    el.dataset.n = n;
    el.endState = renderLine(el, text, state);
    if (this.filter) {
      if (el.textContent.toLowerCase().includes(this.filter)) this.matches++;
      else el.classList.add("filtered-out");
    }
    return el;
  }

  // Lines entry.lines[from..to) at the end of the log.
  append(entry, from, to) {
    const stream = entry.stream;
    let state = this.sgr[stream] || PLAIN;
    let chunk = this.lastChunk();
    let room = this.chunkSize - chunk.childElementCount;
    let fragment = document.createDocumentFragment();
    const last = entry.lines.length - 1;
    for (let k = from; k < to; k++) {
      if (room === 0) {
        chunk.append(fragment);
        this.sealChunk(chunk);
        chunk = this.newChunk();
        room = this.chunkSize;
        fragment = document.createDocumentFragment();
      }
      const isOpen = entry.partial && k === last;
      const el = this.lineElement(entry.base + k, stream, entry.lines[k], state, isOpen);
      if (isOpen) {
        this.open.set(stream, { n: entry.base + k, el, text: entry.lines[k], state0: state, lines: entry.lines, index: k });
      }
      state = el.endState;
      fragment.append(el);
      room--;
    }
    chunk.append(fragment);
    this.domLines += to - from;
    this.stats.rendered += to - from;
    this.sgr[stream] = state;
  }

  // The rest of an open (partial) line arrived: complete it in place.
  continueLine(entry) {
    const open = this.open.get(entry.stream);
    if (!open || open.n !== entry.n) return; // its line is long gone
    open.text += entry.text;
    if (open.lines) open.lines[open.index] = open.text; // for a backfill
    if (!entry.partial) this.open.delete(entry.stream);
    if (!open.el || !open.el.isConnected) {
      this.sgr[entry.stream] = advanceState(entry.text, this.sgr[entry.stream]);
      return;
    }
    const el = open.el;
    this.sgr[entry.stream] = renderLine(el, open.text, open.state0);
    el.classList.toggle("partial", entry.partial);
    if (this.filter) {
      const was = !el.classList.contains("filtered-out");
      const now = el.textContent.toLowerCase().includes(this.filter);
      el.classList.toggle("filtered-out", !now);
      this.matches += (now ? 1 : 0) - (was ? 1 : 0);
    }
  }

  // -- chunks -----------------------------------------------------------------------------

  lastChunk() {
    const last = this.chunks[this.chunks.length - 1];
    if (last && last.childElementCount < this.chunkSize) return last;
    if (last) this.sealChunk(last);
    return this.newChunk();
  }

  newChunk() {
    const chunk = document.createElement("div");
    chunk.className = "chunk";
    this.body.append(chunk);
    this.chunks.push(chunk);
    return chunk;
  }

  // A full chunk: give the browser its height for when it skips rendering it.
  sealChunk(chunk) {
    if (!this.lineHeight) {
      const line = chunk.firstElementChild;
      this.lineHeight = (line && line.getBoundingClientRect().height) || 18;
    }
    chunk.style.containIntrinsicBlockSize = `auto ${Math.ceil(chunk.childElementCount * this.lineHeight)}px`;
    chunk.dataset.sealed = "1";
  }

  clearDom() {
    for (const chunk of this.chunks) chunk.remove();
    this.chunks = [];
    this.domLines = 0;
    this.matches = 0;
  }

  // Keep at most `cap` lines: drop whole chunks, then single lines.
  trim() {
    let excess = this.domLines - this.cap;
    while (excess > 0 && this.chunks.length) {
      const first = this.chunks[0];
      const count = first.childElementCount;
      if (count <= excess) {
        if (this.filter) this.matches -= first.querySelectorAll(".ln:not(.filtered-out)").length;
        first.remove();
        this.chunks.shift();
        this.domLines -= count;
        excess -= count;
      } else {
        for (let k = 0; k < excess; k++) {
          const line = first.firstElementChild;
          if (this.filter && !line.classList.contains("filtered-out")) this.matches--;
          line.remove();
        }
        this.domLines -= excess;
        excess = 0;
        if (first.dataset.sealed) this.sealChunk(first);
      }
    }
    if (this.domLines >= this.cap && this.storeLines) {
      this.store = []; // nothing more fits above
      this.storeLines = 0;
    }
  }

  firstShown() {
    const line = this.chunks.length ? this.chunks[0].firstElementChild : null;
    return line ? Number(line.dataset.n) : null;
  }

  lastShown() {
    const chunk = this.chunks[this.chunks.length - 1];
    const line = chunk ? chunk.lastElementChild : null;
    return line ? Number(line.dataset.n) : null;
  }

  updateInfo() {
    const total = this.finalTotal ?? this.total;
    const first = this.firstShown();
    const earlier = first === null ? total : first - 1;
    if (earlier > 0) {
      const text = `${formatCount(earlier)} earlier ${earlier === 1 ? "line is" : "lines are"} not shown`;
      if (this.markerText.textContent !== text) this.markerText.textContent = text;
    }
    this.marker.hidden = earlier <= 0;
    let text = `${formatCount(total)} ${total === 1 ? "line" : "lines"}`;
    if (this.paused) {
      const newer = total - (this.lastShown() ?? 0);
      text += ` · ${formatCount(newer)} newer not shown while you read: follow to see the end`;
    } else if (earlier > 0) text += ` · showing the last ${formatCount(this.domLines)}`;
    if (this.filter) text += ` · ${formatCount(this.matches)} matching “${this.filter}”`;
    if (this.info.textContent !== text) {
      this.info.textContent = text;
      if (this.onTotal) this.onTotal(total);
    }
    this.body.classList.toggle("empty", this.domLines === 0);
  }

  // -- follow -------------------------------------------------------------------------------

  atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight <= BOTTOM_SLACK_PX;
  }

  setStuck(stuck) {
    if (this.stuck === stuck) return;
    this.stuck = stuck;
    if (this.followButton) this.followButton.setAttribute("aria-pressed", String(stuck));
    if (stuck && this.paused) this.schedule();
  }

  scrollToBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  // -- view options -------------------------------------------------------------------------

  setWrap(wrap) {
    this.scroller.classList.toggle("wrap", wrap);
    if (this.stuck) this.scrollToBottom();
  }

  setFilter(query) {
    const q = query.trim().toLowerCase();
    if (q === this.filter) return;
    this.filter = q;
    this.matches = 0;
    this.scroller.classList.toggle("filtering", Boolean(q));
    for (const el of this.body.querySelectorAll(".ln")) {
      const hit = !q || el.textContent.toLowerCase().includes(q);
      el.classList.toggle("filtered-out", !hit);
      if (q && hit) this.matches++;
    }
    this.updateInfo();
    if (this.stuck) this.scrollToBottom();
  }
}
