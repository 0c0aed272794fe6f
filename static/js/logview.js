// The live log on the page: numbered lines, stdout/stderr apart, partial lines
// completed in place, a bounded DOM, and "follow" that only sticks while the
// reader is at the bottom.
//
// What to show is decided by the model (logmodel.js: parsing within a budget,
// joining partial lines, the cap, floods skipped and filled in later); this
// is its sink: it draws lines as the model says, once per animation frame.
// The DOM holds the lines in chunks whose rendering the browser skips while
// they are off screen (content-visibility), and a marker says how many
// earlier lines are not shown, with a button that loads them a page at a time
// (also when the reader scrolls to the top): `fetchEarlier(before)` asks the
// server, the model decides what is shown (logmodel.js, "Earlier lines").

import { LogModel, describe, lineMatcher } from "./logmodel.js";
import { renderLine } from "./term.js";

const BOTTOM_SLACK_PX = 8;
const TOP_SLACK_PX = 8; // this close to the top, earlier lines are loaded
// A line's time (its `log` event's `at`), shown by the "Timestamps" toggle
// from the line's data-at (app.css); a line of an older log has none.
const NO_TIME = "–".padEnd(24);

export class LogView {
  constructor({
    scroller, body, marker, markerText, info, followButton, onTotal = null, cap = 5000, chunkSize = 200,
    earlierButton = null, errorBox = null, errorText = null, retryButton = null,
    fetchEarlier = null, onWantTail = null,
  }) {
    this.onTotal = onTotal;
    // Earlier lines: fetchEarlier(before) -> Promise<{lines, first, earlier}>
    // (GET /lines?before=); onWantTail(): detached and following again, the
    // page fetches a fresh snapshot for resetTail (or calls tailFailed).
    this.earlierButton = earlierButton;
    this.errorBox = errorBox;
    this.errorText = errorText;
    this.fetchEarlier = fetchEarlier;
    this.onWantTail = onWantTail;
    this.retry = null; // what "Try again" does after an error
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

    // Only the reader's own moves count: a scroll down to the bottom follows
    // again, one up to the top loads earlier lines. A log that shrank (a
    // filter) or grew above (earlier lines) moves the scroll position too.
    this.lastTop = 0;
    scroller.addEventListener("scroll", () => {
      const top = scroller.scrollTop;
      const moved = Math.sign(top - this.lastTop);
      this.lastTop = top;
      if (!this.atBottom()) this.setStuck(false);
      else if (moved > 0) this.setStuck(true);
      if (moved < 0 && this.atTop()) this.loadEarlier(true);
    }, { passive: true });
    scroller.addEventListener("wheel", (e) => {
      if (e.deltaY >= 0) return;
      this.setStuck(false);
      if (this.atTop()) this.loadEarlier(true); // already at the top: no scroll event comes
    }, { passive: true });
    scroller.addEventListener("keydown", (e) => {
      if (["ArrowUp", "PageUp", "Home"].includes(e.key)) this.setStuck(false);
    });
    if (followButton) {
      followButton.addEventListener("click", () => {
        this.setStuck(!this.model.stuck);
        if (this.model.stuck) this.scrollToBottom();
      });
    }
    if (earlierButton) earlierButton.addEventListener("click", () => this.loadEarlier(false));
    if (retryButton) {
      retryButton.addEventListener("click", () => {
        const retry = this.retry;
        this.showError(null);
        if (retry) retry();
      });
    }
  }

  // For run.js, the tests and the curious.
  get total() { return this.model.total; }
  get busy() { return this.model.busy; }
  get stats() { return this.model.stats; }
  get stuck() { return this.model.stuck; }

  // -- input ----------------------------------------------------------------------------

  // Lines of the server's snapshot: [{n, stream, text, partial}], oldest first;
  // `earlier` false when the server says no line comes before them.
  loadSnapshot(lines, total, earlier = true) {
    this.model.loadSnapshot(lines, total, earlier);
    this.schedule();
  }

  // -- earlier lines --------------------------------------------------------------------

  // Load the page of lines before the oldest shown ("Load earlier lines", or
  // the reader scrolled to the top: `auto`, which does not retry after an error).
  async loadEarlier(auto = false) {
    if (!this.fetchEarlier || (auto && (this.model.stuck || this.retry))) return;
    const before = this.model.earlierBefore(this);
    if (before === null) return;
    this.showError(null);
    this.model.startEarlier();
    this.updateInfo();
    let answer;
    try {
      answer = await this.fetchEarlier(before);
    } catch (err) {
      this.model.earlierFailed();
      this.showError(`Could not load earlier lines: ${messageOf(err)}.`, () => this.loadEarlier(false));
      this.schedule();
      this.updateInfo();
      return;
    }
    this.model.prependEarlier(before, answer, this);
    this.updateInfo();
    this.schedule();
  }

  // Detached and following again (the model asks): the newest lines, from the page.
  wantTail() {
    if (this.onWantTail) this.onWantTail();
    else this.model.tailFailed();
  }

  // A fresh snapshot of the tail, after onWantTail: start over from it.
  resetTail(lines, total, earlier = true) {
    this.showError(null);
    this.model.resetTail(lines, total, earlier, this);
    this.setStuck(true);
    this.updateInfo();
    this.schedule();
  }

  // The newest lines could not be fetched: say so; following again (or "Try again") asks again.
  tailFailed(message) {
    this.model.tailFailed();
    this.setStuck(false, true);
    this.showError(message, () => {
      this.setStuck(true);
      this.scrollToBottom();
    });
    this.updateInfo();
  }

  showError(message, retry = null) {
    this.retry = message ? retry : null;
    if (!this.errorBox) return;
    this.errorBox.hidden = !message;
    if (message && this.errorText.textContent !== message) this.errorText.textContent = message;
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

  // Lines shown above the others (a backfill, or earlier lines), oldest
  // first, in chunks of `chunkSize`. With `keepScroll`, what the reader sees
  // stays where it is on the screen.
  prepend(pieces, { keepScroll = false } = {}) {
    const before = this.chunks[0] || null;
    const top = keepScroll && before ? before.getBoundingClientRect().top : 0;
    const added = [];
    let chunk = null;
    for (const piece of pieces) {
      let state = piece.state;
      const open = piece.open;
      for (let k = piece.from; k < piece.to; k++) {
        if (chunk === null || (keepScroll && chunk.childElementCount >= this.chunkSize)) {
          chunk = document.createElement("div");
          chunk.className = "chunk";
          added.push(chunk);
        }
        const n = piece.base + k;
        const isOpen = open !== null && open.n === n;
        const el = this.lineElement(n, piece.stream, piece.lines[k], state, isOpen, piece.at);
        if (isOpen) Object.assign(open, { el, state0: state });
        state = el.endState;
        chunk.append(el);
      }
    }
    if (!added.length) return;
    const fragment = document.createDocumentFragment();
    fragment.append(...added);
    this.body.insertBefore(fragment, before);
    this.chunks.unshift(...added);
    for (const c of added) this.sealChunk(c);
    if (keepScroll && before) {
      const moved = before.getBoundingClientRect().top - top;
      if (moved) this.scroller.scrollTop += moved;
    }
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

  // Drop the `count` newest lines: whole chunks, then single lines.
  dropNewest(count) {
    let excess = count;
    while (excess > 0 && this.chunks.length) {
      const last = this.chunks[this.chunks.length - 1];
      const lines = last.childElementCount;
      if (lines <= excess) {
        if (this.match) this.matches -= last.querySelectorAll(".ln:not(.filtered-out)").length;
        last.remove();
        this.chunks.pop();
        excess -= lines;
      } else {
        for (let k = 0; k < excess; k++) {
          const line = last.lastElementChild;
          if (this.match && !line.classList.contains("filtered-out")) this.matches--;
          line.remove();
        }
        excess = 0;
        if (last.dataset.sealed) this.sealChunk(last);
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
    const behind = model.paused || model.detached;
    const { marker, info } = describe({
      total,
      first: this.firstShown(),
      last: behind ? this.lastShown() : null,
      paused: behind,
      shown: model.domLines,
      filter: this.filter,
      matches: this.matches,
    });
    if (marker !== null && this.markerText.textContent !== marker) this.markerText.textContent = marker;
    this.marker.hidden = marker === null;
    const button = this.earlierButton;
    if (button) {
      const loading = model.loadingEarlier;
      const hidden = !this.fetchEarlier || (!loading && model.earlierBefore(this) === null);
      if (button.hidden !== hidden) button.hidden = hidden;
      if (button.disabled !== loading) {
        button.disabled = loading;
        button.setAttribute("aria-busy", String(loading));
        button.textContent = loading ? "Loading earlier lines…" : "Load earlier lines";
      }
    }
    this.pressFollow(model.stuck); // the model may have let go of the end itself (detached)
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

  // Scrolled to the top of a log taller than its box.
  atTop() {
    const s = this.scroller;
    return s.scrollTop <= TOP_SLACK_PX && s.scrollHeight > s.clientHeight;
  }

  setStuck(stuck, force = false) {
    const model = this.model;
    if (model.stuck === stuck && !force) return;
    model.stuck = stuck;
    this.pressFollow(stuck);
    if (stuck && (model.paused || model.detached)) this.schedule();
  }

  pressFollow(stuck) {
    const button = this.followButton;
    if (button && button.getAttribute("aria-pressed") !== String(stuck)) button.setAttribute("aria-pressed", String(stuck));
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

function messageOf(err) {
  return String((err && err.message) || err || "unknown error").replace(/\.$/, "");
}
