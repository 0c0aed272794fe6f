// The live log on the page: numbered lines, stdout/stderr apart, partial lines
// completed in place, a bounded DOM, and "follow" that only sticks while the
// reader is at the bottom.
//
// What to show is decided by the model (logmodel.js: parsing within a budget,
// joining partial lines, the cap, floods skipped and filled in later); this
// is its sink: it draws lines as the model says, once per animation frame.
// The DOM holds the lines in chunks whose rendering the browser skips while
// they are off screen (content-visibility), and a marker says how many
// earlier lines are only in the full log.

import { LogModel, describe, lineMatcher } from "./logmodel.js";
import { renderLine } from "./term.js";

const BOTTOM_SLACK_PX = 8;
// A line's time (its `log` event's `at`), shown by the "Timestamps" toggle
// from the line's data-at (app.css); a line of an older log has none.
const NO_TIME = "–".padEnd(24);

export class LogView {
  constructor({ scroller, body, marker, markerText, info, followButton, onTotal = null, cap = 5000, chunkSize = 200 }) {
    this.onTotal = onTotal;
    this.scroller = scroller;
    this.body = body;
    this.marker = marker;
    this.markerText = markerText;
    this.info = info;
    this.followButton = followButton;
    this.chunkSize = chunkSize;
    this.model = new LogModel({ cap });

    this.chunks = []; // chunk elements, oldest first
    this.filter = ""; // the filter as typed ("" when none or invalid)
    this.regex = false;
    this.match = null; // text -> whether the line matches (null: no filter)
    this.matches = 0;
    this.scheduled = false;
    this.inFrame = false;
    this.lineHeight = 0;

    scroller.addEventListener("scroll", () => this.setStuck(this.atBottom()), { passive: true });
    scroller.addEventListener("wheel", (e) => { if (e.deltaY < 0) this.setStuck(false); }, { passive: true });
    scroller.addEventListener("keydown", (e) => {
      if (["ArrowUp", "PageUp", "Home"].includes(e.key)) this.setStuck(false);
    });
    if (followButton) {
      followButton.addEventListener("click", () => {
        this.setStuck(!this.model.stuck);
        if (this.model.stuck) this.scrollToBottom();
      });
    }
  }

  // For run.js, the tests and the curious.
  get total() { return this.model.total; }
  get busy() { return this.model.busy; }
  get stats() { return this.model.stats; }
  get stuck() { return this.model.stuck; }

  // -- input ----------------------------------------------------------------------------

  // Lines of the server's snapshot: [{n, stream, text, partial}], oldest first.
  loadSnapshot(lines, total) {
    this.model.loadSnapshot(lines, total);
    this.schedule();
  }

  // One `log` event's data as it came (JSON text): parsed in the next frame.
  addRaw(json) {
    this.model.addRaw(json);
    this.schedule();
  }

  // One `log` event's data (docs/api.md).
  add(data) {
    this.model.add(data);
    this.schedule();
  }

  // The run is done: its own line count is the last word.
  finish(logLines) {
    this.model.finish(logLines);
    this.schedule();
  }

  schedule() {
    if (this.scheduled || this.inFrame) return;
    this.scheduled = true;
    requestAnimationFrame(() => this.frame());
  }

  frame() {
    this.scheduled = false;
    this.inFrame = true;
    this.model.frame(this);
    this.inFrame = false;
    if (this.model.busy) this.schedule();
  }

  // -- the model's sink (see logmodel.js) ----------------------------------------------

  lineElement(n, stream, text, state, isOpen, at) {
    const el = document.createElement("div");
    el.className = isOpen ? `ln ${stream} partial` : `ln ${stream}`;
    el.dataset.n = n;
    el.dataset.at = at || NO_TIME;
    el.endState = renderLine(el, text, state);
    if (this.match) {
      if (this.match(el.textContent)) this.matches++;
      else el.classList.add("filtered-out");
    }
    return el;
  }

  // Lines entry.lines[from..to) at the end of the log.
  append(entry, from, to, state, open) {
    const stream = entry.stream;
    let chunk = this.lastChunk();
    let room = this.chunkSize - chunk.childElementCount;
    let fragment = document.createDocumentFragment();
    for (let k = from; k < to; k++) {
      if (room === 0) {
        chunk.append(fragment);
        this.sealChunk(chunk);
        chunk = this.newChunk();
        room = this.chunkSize;
        fragment = document.createDocumentFragment();
      }
      const isOpen = open !== null && k === open.index;
      const el = this.lineElement(entry.base + k, stream, entry.lines[k], state, isOpen, entry.at);
      if (isOpen) Object.assign(open, { el, state0: state });
      state = el.endState;
      fragment.append(el);
      room--;
    }
    chunk.append(fragment);
    return state;
  }

  // Skipped lines filled in above the others (a backfill), oldest first.
  prepend(pieces) {
    const before = this.chunks[0] || null;
    const chunk = document.createElement("div");
    chunk.className = "chunk";
    for (const piece of pieces) {
      let state = piece.state;
      const open = piece.open;
      for (let k = piece.from; k < piece.to; k++) {
        const n = piece.base + k;
        const isOpen = open !== null && open.n === n;
        const el = this.lineElement(n, piece.stream, piece.lines[k], state, isOpen, piece.at);
        if (isOpen) Object.assign(open, { el, state0: state });
        state = el.endState;
        chunk.append(el);
      }
    }
    this.body.insertBefore(chunk, before);
    this.chunks.unshift(chunk);
    this.sealChunk(chunk);
  }

  // The open line grew: draw it again, if it is still on the page.
  rerender(open, partial) {
    const el = open.el;
    if (!el.isConnected) return null;
    const state = renderLine(el, open.text, open.state0);
    el.classList.toggle("partial", partial);
    if (this.match) {
      const was = !el.classList.contains("filtered-out");
      const now = this.match(el.textContent);
      el.classList.toggle("filtered-out", !now);
      this.matches += (now ? 1 : 0) - (was ? 1 : 0);
    }
    return state;
  }

  clear() {
    for (const chunk of this.chunks) chunk.remove();
    this.chunks = [];
    this.matches = 0;
  }

  // Drop the `count` oldest lines: whole chunks, then single lines.
  dropOldest(count) {
    let excess = count;
    while (excess > 0 && this.chunks.length) {
      const first = this.chunks[0];
      const lines = first.childElementCount;
      if (lines <= excess) {
        if (this.match) this.matches -= first.querySelectorAll(".ln:not(.filtered-out)").length;
        first.remove();
        this.chunks.shift();
        excess -= lines;
      } else {
        for (let k = 0; k < excess; k++) {
          const line = first.firstElementChild;
          if (this.match && !line.classList.contains("filtered-out")) this.matches--;
          line.remove();
        }
        excess = 0;
        if (first.dataset.sealed) this.sealChunk(first);
      }
    }
    return count - excess;
  }

  update() {
    this.updateInfo();
  }

  follow() {
    this.scrollToBottom();
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
    const model = this.model;
    const total = model.shownTotal;
    const { marker, info } = describe({
      total,
      first: this.firstShown(),
      last: model.paused ? this.lastShown() : null,
      paused: model.paused,
      shown: model.domLines,
      filter: this.filter,
      matches: this.matches,
    });
    if (marker !== null && this.markerText.textContent !== marker) this.markerText.textContent = marker;
    this.marker.hidden = marker === null;
    if (this.info.textContent !== info) {
      this.info.textContent = info;
      if (this.onTotal) this.onTotal(total);
    }
    this.body.classList.toggle("empty", model.domLines === 0);
  }

  // -- follow -------------------------------------------------------------------------------

  atBottom() {
    const s = this.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight <= BOTTOM_SLACK_PX;
  }

  setStuck(stuck) {
    const model = this.model;
    if (model.stuck === stuck) return;
    model.stuck = stuck;
    if (this.followButton) this.followButton.setAttribute("aria-pressed", String(stuck));
    if (stuck && model.paused) this.schedule();
  }

  scrollToBottom() {
    this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  // -- view options -------------------------------------------------------------------------

  setWrap(wrap) {
    this.scroller.classList.toggle("wrap", wrap);
    if (this.model.stuck) this.scrollToBottom();
  }

  // Show each line's time (its data-at) before its number.
  setTimes(show) {
    this.scroller.classList.toggle("times", show);
    if (this.model.stuck) this.scrollToBottom();
  }

  // Filter the lines by `query`: a substring, or a regular expression when
  // `regex` (both case-insensitive). Returns the error of an invalid pattern
  // (then nothing is filtered), or null.
  setFilter(query, regex = this.regex) {
    const { test, error } = lineMatcher(query, regex);
    const q = test ? (regex ? query : query.trim().toLowerCase()) : "";
    if (q === this.filter && regex === this.regex) return error;
    this.filter = q;
    this.regex = regex;
    this.match = test;
    this.matches = 0;
    this.scroller.classList.toggle("filtering", Boolean(test));
    for (const el of this.body.querySelectorAll(".ln")) {
      const hit = !test || test(el.textContent);
      el.classList.toggle("filtered-out", !hit);
      if (test && hit) this.matches++;
    }
    this.updateInfo();
    if (this.model.stuck) this.scrollToBottom();
    return error;
  }
}
