// One log line as a terminal would show it, written into an element as TEXT.
//
// - SGR (ESC [ ... m) colours and attributes become spans with classes
//   (fg-N / bg-N for the 16 basic colours, sgr-bold, sgr-dim, sgr-italic,
//   sgr-underline, sgr-strike, sgr-inverse); 256-colour and true-colour values
//   become an inline colour set through the style property, never markup.
// - "\r" returns to the start of the line and later text overwrites earlier
//   text, "\b" steps back, ESC [ K erases, ESC [ G/C/D move the cursor; other
//   escape sequences and control characters are dropped.
// - The attribute state carries over from line to line of the same stream,
//   as in a terminal: renderLine returns the state at the end of the line.
//
// - Output cannot make this slow, however hostile: a line shows at most
//   MAX_COLUMNS cells (cursor moves go no further: `ESC[2147483647G` costs
//   nothing), and only its first MAX_SCAN characters are laid out (the state
//   at its end still follows the colour changes after them). A line cut
//   either way ends with a marker saying so; the full text is in the
//   download (GET /api/runs/{id}/logs). backend/web/snapshot.py sends the
//   page no more of a line than MAX_SCAN + 1 characters.
//
// Everything but renderLine is pure (Node's tests in tests/js/term.test.mjs):
// lineSegments lays a line out as runs of text with one state each and
// spanStyle says how a state is shown; renderLine only makes the nodes.

import { formatCount } from "./format.js";

export const MAX_COLUMNS = 10000;
export const MAX_SCAN = 1000000;

// What ends a line that was cut after `at` characters.
export function cutMarker(at) {
  return ` … [line cut at ${formatCount(at)} characters: the full text is in the download]`;
}

export const PLAIN = Object.freeze({
  fg: null, bg: null, bold: false, dim: false, italic: false, underline: false,
  strike: false, inverse: false,
});

// Anything that needs more than "append the text": ESC, CR, BS, other C0, DEL.
const SPECIAL = /[\x00-\x08\x0a-\x1f\x7f]/;

function isPlain(s) {
  return s === PLAIN || (s.fg === null && s.bg === null && !s.bold && !s.dim && !s.italic
    && !s.underline && !s.strike && !s.inverse);
}

const CUBE = [0, 95, 135, 175, 215, 255];
function color256(n) {
  if (n < 16) return n;
  if (n < 232) {
    const i = n - 16;
    return `rgb(${CUBE[Math.floor(i / 36)]}, ${CUBE[Math.floor(i / 6) % 6]}, ${CUBE[i % 6]})`;
  }
  const g = 8 + (n - 232) * 10;
  return `rgb(${g}, ${g}, ${g})`;
}

// Apply one SGR parameter list ("1;31", "38;5;208", "") to a state.
export function applySgr(state, params) {
  const s = { ...state };
  const codes = params === "" ? [0] : params.split(/[;:]/).map((p) => (p === "" ? 0 : Number(p)));
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i];
    if (c === 0) Object.assign(s, PLAIN);
    else if (c === 1) s.bold = true;
    else if (c === 2) s.dim = true;
    else if (c === 3) s.italic = true;
    else if (c === 4) s.underline = true;
    else if (c === 7) s.inverse = true;
    else if (c === 9) s.strike = true;
    else if (c === 21 || c === 22) { s.bold = false; s.dim = false; }
    else if (c === 23) s.italic = false;
    else if (c === 24) s.underline = false;
    else if (c === 27) s.inverse = false;
    else if (c === 29) s.strike = false;
    else if (c >= 30 && c <= 37) s.fg = c - 30;
    else if (c === 39) s.fg = null;
    else if (c >= 40 && c <= 47) s.bg = c - 40;
    else if (c === 49) s.bg = null;
    else if (c >= 90 && c <= 97) s.fg = c - 90 + 8;
    else if (c >= 100 && c <= 107) s.bg = c - 100 + 8;
    else if (c === 38 || c === 48) {
      let value = null;
      if (codes[i + 1] === 5 && i + 2 < codes.length) {
        value = color256(Math.min(255, Math.max(0, codes[i + 2] | 0)));
        i += 2;
      } else if (codes[i + 1] === 2 && i + 4 < codes.length) {
        const [r, g, b] = codes.slice(i + 2, i + 5).map((v) => Math.min(255, Math.max(0, v | 0)));
        value = `rgb(${r}, ${g}, ${b})`;
        i += 4;
      } else {
        break; // malformed: ignore the rest
      }
      if (c === 38) s.fg = value;
      else s.bg = value;
    }
  }
  return isPlain(s) ? PLAIN : s;
}

// How text in state `s` is shown: null for plain text, else the span's
// classes and its inline colours ("" when none).
export function spanStyle(s) {
  if (isPlain(s)) return null;
  let fg = s.fg;
  let bg = s.bg;
  const classes = [];
  let color = "";
  let background = "";
  if (s.inverse) {
    classes.push("sgr-inverse");
    [fg, bg] = [bg, fg];
  }
  if (typeof fg === "number") classes.push(`fg-${fg}`);
  else if (typeof fg === "string") color = fg;
  else if (s.inverse) classes.push("fg-inverse");
  if (typeof bg === "number") classes.push(`bg-${bg}`);
  else if (typeof bg === "string") background = bg;
  else if (s.inverse) classes.push("bg-inverse");
  if (s.bold) classes.push("sgr-bold");
  if (s.dim) classes.push("sgr-dim");
  if (s.italic) classes.push("sgr-italic");
  if (s.underline) classes.push("sgr-underline");
  if (s.strike) classes.push("sgr-strike");
  return { className: classes.join(" "), color, background };
}

function styledNode(text, s) {
  const style = spanStyle(s);
  if (style === null) return document.createTextNode(text);
  const span = document.createElement("span");
  if (style.color) span.style.color = style.color;
  if (style.background) span.style.backgroundColor = style.background;
  span.className = style.className;
  span.textContent = text;
  return span;
}

// A short line without control characters: shown as it is.
function simple(text) {
  return text.length <= MAX_COLUMNS && !SPECIAL.test(text);
}

// The first `count` UTF-16 units of `text`, a surrogate pair not split.
function head(text, count) {
  const code = text.charCodeAt(count - 1);
  return text.slice(0, code >= 0xd800 && code < 0xdc00 ? count - 1 : count);
}

// The colour changes (SGR) in text[from..], applied to `state`: what the
// state at the end of a line is past the part that was laid out.
const SGR = /\x1b\[([0-9;:]*)m/g;
function sgrAfter(text, from, state) {
  if (text.indexOf("\x1b", from) < 0) return state;
  let s = state;
  SGR.lastIndex = from;
  for (let m = SGR.exec(text); m !== null; m = SGR.exec(text)) s = applySgr(s, m[1]);
  return s;
}

// A line as a terminal shows it: [{text, state}] runs (adjacent runs differ in
// state; none for an empty line), the state at its end, and `cut`: null, or
// after how many characters the line was cut (see cutMarker).
export function lineSegments(text, state = PLAIN) {
  if (simple(text)) return { segments: text ? [{ text, state }] : [], end: state, cut: null };
  const scanned = text.length > MAX_SCAN ? text.slice(0, MAX_SCAN) : text;
  if (!SPECIAL.test(scanned)) {
    // Plain text, only too long: its head, in the one state.
    const end = scanned.length < text.length ? sgrAfter(text, scanned.length, state) : state;
    return { segments: [{ text: head(text, MAX_COLUMNS), state }], end, cut: MAX_COLUMNS };
  }
  const { cells, styles, end, cut } = layout(text, state);
  const segments = [];
  let start = 0;
  for (let k = 1; k <= cells.length; k++) {
    if (k === cells.length || styles[k] !== styles[start]) {
      segments.push({ text: cells.slice(start, k).join(""), state: styles[start] });
      start = k;
    }
  }
  return { segments, end, cut };
}

function markerNode(cut) {
  const span = document.createElement("span");
  span.className = "line-cut";
  span.textContent = cutMarker(cut);
  return span;
}

// Render `text` into `el` (replacing its content); returns the end state.
export function renderLine(el, text, state = PLAIN) {
  if (simple(text)) {
    if (isPlain(state)) el.textContent = text;
    else el.replaceChildren(styledNode(text, state));
    return state;
  }
  const { segments, end, cut } = lineSegments(text, state);
  const nodes = segments.map((seg) => styledNode(seg.text, seg.state));
  if (cut !== null) nodes.push(markerNode(cut));
  el.replaceChildren(...nodes);
  return end;
}

// Only the state change of a line (for lines that are counted but not shown).
export function advanceState(text, state = PLAIN) {
  if (text.indexOf("\x1b") < 0) return state;
  return layout(text, state).end;
}

// The visible text of a line, as renderLine would show it (its marker included).
export function visibleText(text) {
  if (simple(text)) return text;
  const { segments, cut } = lineSegments(text, PLAIN);
  const shown = segments.map((seg) => seg.text).join("");
  return cut === null ? shown : shown + cutMarker(cut);
}

// Lay out the first MAX_SCAN characters of `text` in at most MAX_COLUMNS
// cells: {cells, styles, end, cut}.
function layout(text, state) {
  const cells = [];
  const styles = [];
  let col = 0;
  let cur = state;
  let cut = null;
  const n = Math.min(text.length, MAX_SCAN);
  const put = (ch) => {
    if (col >= MAX_COLUMNS) {
      cut = MAX_COLUMNS;
      return;
    }
    while (cells.length < col) {
      cells.push(" ");
      styles.push(PLAIN);
    }
    cells[col] = ch;
    styles[col] = cur;
    col += 1;
  };
  const move = (to) => Math.min(MAX_COLUMNS, Math.max(0, to));
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x1b) {
      const next = text[i + 1];
      if (next === "[") {
        let j = i + 2;
        while (j < n) {
          const cc = text.charCodeAt(j);
          if (cc >= 0x40 && cc <= 0x7e) break;
          j++;
        }
        if (j >= n) break; // an unfinished sequence at the end: drop it
        const params = text.slice(i + 2, j);
        const final = text[j];
        if (final === "m") {
          cur = applySgr(cur, params);
        } else if (final === "K") {
          const p = parseInt(params, 10) || 0;
          if (p === 0) {
            cells.length = Math.min(cells.length, col);
            styles.length = cells.length;
          } else if (p === 1) {
            for (let k = 0; k < Math.min(col + 1, cells.length); k++) {
              cells[k] = " ";
              styles[k] = PLAIN;
            }
          } else {
            cells.length = 0;
            styles.length = 0;
          }
        } else if (final === "G") {
          col = move((parseInt(params, 10) || 1) - 1);
        } else if (final === "C") {
          col = move(col + (parseInt(params, 10) || 1));
        } else if (final === "D") {
          col = move(col - (parseInt(params, 10) || 1));
        }
        i = j + 1;
        continue;
      }
      if (next === "]") { // OSC: up to BEL or ESC \
        let j = i + 2;
        while (j < n && text.charCodeAt(j) !== 7 && !(text.charCodeAt(j) === 0x1b && text[j + 1] === "\\")) j++;
        i = j >= n ? n : text.charCodeAt(j) === 7 ? j + 1 : j + 2;
        continue;
      }
      // ESC, intermediate bytes (0x20-0x2f), a final byte: "ESC ( B" (a
      // character set, as `tput sgr0` writes it), "ESC 7", "ESC =" ...
      let j = i + 1;
      while (j < n && text.charCodeAt(j) >= 0x20 && text.charCodeAt(j) <= 0x2f) j++;
      i = j + 1;
      continue;
    }
    if (c === 13) { col = 0; i++; continue; }
    if (c === 8) { if (col > 0) col--; i++; continue; }
    if (c === 9) {
      const stop = move((Math.floor(col / 8) + 1) * 8);
      while (col < stop) {
        if (col >= cells.length) put(" ");
        else col++;
      }
      i++;
      continue;
    }
    if (c < 32 || c === 127) { i++; continue; }
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < n) {
      put(text.slice(i, i + 2));
      i += 2;
    } else {
      put(text[i]);
      i++;
    }
  }
  if (text.length > MAX_SCAN) {
    cut ??= MAX_SCAN;
    cur = sgrAfter(text, i, cur);
  }
  return { cells, styles, end: cur, cut };
}
