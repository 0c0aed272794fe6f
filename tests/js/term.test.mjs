// static/js/term.js: a log line as a terminal shows it (SGR, \r, cursor
// moves, erase), without a browser.

import assert from "node:assert/strict";
import { after, before, describe as suite, test } from "node:test";

import {
  MAX_COLUMNS, MAX_SCAN, PLAIN, advanceState, applySgr, cutMarker, lineSegments, renderLine, spanStyle,
  visibleText,
} from "../../static/js/term.js";

// What the screen shows: [text, classes, inline colours] per run.
function shown(text, state = PLAIN) {
  const { segments, end } = lineSegments(text, state);
  const runs = segments.map((seg) => {
    const style = spanStyle(seg.state);
    return style === null ? [seg.text] : [seg.text, style.className, style.color, style.background];
  });
  return { runs, end };
}

suite("visibleText: carriage returns, cursor moves, erase, control characters", () => {
  const cases = [
    ["plain text", "plain text"],
    ["tab\tstays", "tab\tstays"],
    ["abcdef\rXY", "XYcdef"], // \r returns; later text overwrites
    ["progress 10%\rprogress 100%", "progress 100%"],
    ["50%\r\x1b[K7%", "7%"], // erase to the end of the line
    ["ab\bC", "aC"],
    ["\b\bstart", "start"], // no further left than the start
    ["trailing\r", "trailing"],
    ["\x1b[31mred\x1b[0m", "red"],
    ["bell\x07 and \x1b]0;title\x07osc", "bell and osc"],
    ["osc to the end \x1b]0;never closed", "osc to the end "],
    ["osc \x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ end", "osc link end"],
    ["unfinished \x1b[3", "unfinished "],
    ["col\x1b[10Gx", "col      x"],
    ["abc\x1b[Gx", "xbc"], // G without a number: column 1
    ["ab\x1b[3Cx", "ab   x"], // forward
    ["abcdef\x1b[2DX", "abcdXf"], // back
    ["ab\x1b[9DX", "Xb"],
    ["abcdef\x1b[4G\x1b[1KZ", "   Zef"], // erase to the start, the cursor's cell included
    ["abcdef\x1b[3G\x1b[2KZ", "  Z"], // erase the line, the cursor stays
    ["a\tb", "a\tb"],
    ["abcdefghij\rab\tX", "abcdefghXj"], // a tab over text moves, does not erase
    ["emoji 😀\rE", "Emoji 😀"],
    ["\x00nul\x7fdel\x1b(Bcharset", "nuldelcharset"],
    ["\x1b(B\x1b[mtput sgr0\x1b7 saved\x1b8", "tput sgr0 saved"],
    ["unfinished charset \x1b(", "unfinished charset "],
    ["", ""],
  ];
  for (const [text, expected] of cases) {
    test(JSON.stringify(text), () => {
      assert.equal(visibleText(text), expected);
      assert.equal(lineSegments(text).segments.map((s) => s.text).join(""), expected);
    });
  }
});

suite("SGR", () => {
  test("attributes become classes and carry over to the next line", () => {
    const first = shown("\x1b[1;4;33mwarn");
    assert.deepEqual(first.runs, [["warn", "fg-3 sgr-bold sgr-underline", "", ""]]);
    const second = shown("still\x1b[22m thin\x1b[0m plain", first.end);
    assert.deepEqual(second.runs, [
      ["still", "fg-3 sgr-bold sgr-underline", "", ""],
      [" thin", "fg-3 sgr-underline", "", ""],
      [" plain"],
    ]);
    assert.equal(second.end, PLAIN);
  });

  test("inverse swaps the colours, defaults included", () => {
    assert.deepEqual(shown("\x1b[7minverse\x1b[27m back").runs, [
      ["inverse", "sgr-inverse fg-inverse bg-inverse", "", ""],
      [" back"],
    ]);
    assert.deepEqual(shown("\x1b[31;42;7mx").runs, [["x", "sgr-inverse fg-2 bg-1", "", ""]]);
  });

  test("bright, 256 and true colours", () => {
    assert.deepEqual(shown("\x1b[95;100mbright").runs, [["bright", "fg-13 bg-8", "", ""]]);
    assert.deepEqual(shown("\x1b[38;5;208mo").runs, [["o", "", "rgb(255, 135, 0)", ""]]);
    assert.deepEqual(shown("\x1b[38;5;9mr").runs, [["r", "fg-9", "", ""]]);
    assert.deepEqual(shown("\x1b[48;5;244mg").runs, [["g", "", "", "rgb(128, 128, 128)"]]);
    assert.deepEqual(shown("\x1b[48;2;1;2;3mtrue\x1b[49m").runs, [["true", "", "", "rgb(1, 2, 3)"]]);
    assert.deepEqual(shown("\x1b[38:2:300:0:-1mclamped").runs, [["clamped", "", "rgb(255, 0, 0)", ""]]);
  });

  test("dim, italic, strike and their resets", () => {
    let s = applySgr(PLAIN, "2;3;9");
    assert.deepEqual(spanStyle(s).className, "sgr-dim sgr-italic sgr-strike");
    s = applySgr(s, "22;23;29");
    assert.equal(s, PLAIN);
    assert.equal(applySgr(applySgr(PLAIN, "31;44"), "39;49"), PLAIN);
  });

  test("an empty or zero list resets; a malformed colour stops the list", () => {
    const red = applySgr(PLAIN, "31");
    assert.equal(applySgr(red, ""), PLAIN);
    assert.equal(applySgr(red, "0"), PLAIN);
    assert.equal(applySgr(red, ";"), PLAIN);
    const s = applySgr(PLAIN, "1;38;7;31");
    assert.equal(s.bold, true);
    assert.equal(s.fg, null); // "38;7" is not a colour: the rest is ignored
  });

  test("plain text in a non-plain state is one styled run", () => {
    const bold = applySgr(PLAIN, "1");
    assert.deepEqual(shown("text", bold).runs, [["text", "sgr-bold", "", ""]]);
  });

  test("advanceState follows only the escapes", () => {
    assert.equal(advanceState("no escapes\r", PLAIN), PLAIN);
    const s = advanceState("a\x1b[32mb\x1b[1mc", PLAIN);
    assert.equal(s.fg, 2);
    assert.equal(s.bold, true);
    assert.equal(advanceState("\x1b[0m", s), PLAIN);
  });

  test("overwritten text keeps the style it was written with", () => {
    assert.deepEqual(shown("\x1b[31mred\r\x1b[0mR").runs, [["R"], ["ed", "fg-1", "", ""]]);
  });
});

suite("renderLine: text nodes and spans, never markup", () => {
  // Just enough of a document for renderLine.
  class Node {
    constructor(text = "") {
      this.text = text;
      this.children = [];
      this.className = "";
      this.style = {};
    }

    get textContent() {
      return this.children.length ? this.children.map((c) => c.textContent).join("") : this.text;
    }

    set textContent(text) {
      this.children = [];
      this.text = text;
    }

    replaceChildren(...nodes) {
      this.text = "";
      this.children = nodes;
    }
  }

  before(() => {
    globalThis.document = {
      createTextNode: (text) => Object.assign(new Node(text), { nodeType: 3 }),
      createElement: () => Object.assign(new Node(), { nodeType: 1 }),
    };
  });
  after(() => {
    delete globalThis.document;
  });

  test("plain text is set as text", () => {
    const el = new Node();
    assert.equal(renderLine(el, "<b>not bold</b>"), PLAIN);
    assert.equal(el.text, "<b>not bold</b>");
    assert.equal(el.children.length, 0);
  });

  test("styled runs become spans with classes and colours", () => {
    const el = new Node();
    const end = renderLine(el, "a\x1b[1;38;2;1;2;3mb\x1b[22mc");
    assert.equal(el.textContent, "abc");
    assert.deepEqual(
      el.children.map((n) => [n.nodeType, n.textContent, n.className, n.style.color]),
      [[3, "a", "", undefined], [1, "b", "sgr-bold", "rgb(1, 2, 3)"], [1, "c", "", "rgb(1, 2, 3)"]],
    );
    assert.equal(end.fg, "rgb(1, 2, 3)");
  });

  test("a line in a carried-over state is one span", () => {
    const el = new Node();
    renderLine(el, "still red", applySgr(PLAIN, "31"));
    assert.deepEqual(el.children.map((n) => [n.textContent, n.className]), [["still red", "fg-1"]]);
  });
});

suite("hostile output: capped columns and line widths, cut with a marker", () => {
  const text = (line) => lineSegments(line).segments.map((s) => s.text).join("");

  for (const move of ["\x1b[2147483647G", "\x1b[99999999C", "\x1b[50000000G", "\x1b[99999999999999999999C"]) {
    test(`${JSON.stringify(move)} builds no more than MAX_COLUMNS cells`, () => {
      const { segments, cut } = lineSegments(`a${move}b`);
      assert.equal(segments.map((s) => s.text).join(""), "a"); // b fell past the last column
      assert.equal(cut, MAX_COLUMNS);
      assert.equal(visibleText(`a${move}b`), `a${cutMarker(MAX_COLUMNS)}`);
    });
  }

  test("a move past the cap and back loses nothing", () => {
    assert.deepEqual(lineSegments("a\x1b[2147483647G\rB").cut, null);
    assert.equal(visibleText("a\x1b[2147483647G\rB"), "B");
    assert.equal(visibleText("ab\x1b[99999999C\x1b[99999999DX"), "Xb");
  });

  test("the last column is still written; the one after it is cut", () => {
    const line = `\x1b[${MAX_COLUMNS}Gyz`;
    const shown = text(line);
    assert.equal(shown.length, MAX_COLUMNS);
    assert.equal(shown.at(-1), "y");
    assert.equal(lineSegments(line).cut, MAX_COLUMNS);
    assert.equal(lineSegments(`\x1b[${MAX_COLUMNS}Gy`).cut, null);
  });

  test("tabs stop at the cap", () => {
    const { segments, cut } = lineSegments("\t".repeat(MAX_COLUMNS) + "x");
    assert.equal(segments.map((s) => s.text).join("").length, MAX_COLUMNS);
    assert.equal(cut, MAX_COLUMNS);
  });

  test("a plain line longer than MAX_COLUMNS shows its head and the marker", () => {
    const exact = "x".repeat(MAX_COLUMNS);
    assert.equal(visibleText(exact), exact);
    assert.equal(lineSegments(exact).cut, null);
    const long = "y".repeat(10_000_000); // 10 MB without a newline
    const { segments, end, cut } = lineSegments(long);
    assert.deepEqual(segments.map((s) => s.text.length), [MAX_COLUMNS]);
    assert.equal(cut, MAX_COLUMNS);
    assert.equal(end, PLAIN);
    assert.equal(visibleText(long), "y".repeat(MAX_COLUMNS) + cutMarker(MAX_COLUMNS));
  });

  test("a cut never splits a surrogate pair", () => {
    const line = "x".repeat(MAX_COLUMNS - 1) + "😀" + "tail";
    const shown = text(line);
    assert.equal(shown, "x".repeat(MAX_COLUMNS - 1));
    const styled = "\x1b[1m" + "x".repeat(MAX_COLUMNS - 1) + "😀😀";
    assert.equal(text(styled), "x".repeat(MAX_COLUMNS - 1) + "😀"); // a pair is one cell
  });

  test("only the first MAX_SCAN characters are laid out; colours after them still count", () => {
    const progress = "ab\r".repeat(Math.ceil(MAX_SCAN / 3) + 10) + "\x1b[31m";
    const { segments, end, cut } = lineSegments(progress);
    assert.deepEqual(segments.map((s) => s.text), ["ab"]);
    assert.equal(cut, MAX_SCAN);
    assert.equal(end.fg, 1); // the SGR past the scanned part
    assert.equal(advanceState(progress).fg, 1);
    const plain = "z".repeat(MAX_SCAN + 1) + "\x1b[1;32m";
    const after = lineSegments(plain);
    assert.equal(after.cut, MAX_COLUMNS);
    assert.equal(after.end.bold, true);
    assert.equal(after.end.fg, 2);
    assert.equal(advanceState(plain).fg, 2);
  });

  test("an escape split by the scan limit is read from the rest", () => {
    const line = "\r".repeat(MAX_SCAN - 2) + "\x1b[33m" + "x";
    assert.equal(lineSegments(line).end.fg, 3);
    assert.equal(lineSegments(line).cut, MAX_SCAN);
  });

  test("the marker says where the line was cut and where the full text is", () => {
    const marker = cutMarker(MAX_COLUMNS);
    assert.match(marker, /^ … \[line cut at 10.000 characters: the full text is in the download\]$/);
  });
});

suite("renderLine: a cut line ends with its marker", () => {
  class Node {
    constructor() {
      this.children = [];
      this.className = "";
      this.style = {};
      this.text = "";
    }

    get textContent() {
      return this.children.length ? this.children.map((c) => c.textContent).join("") : this.text;
    }

    set textContent(text) {
      this.children = [];
      this.text = text;
    }

    replaceChildren(...nodes) {
      this.text = "";
      this.children = nodes;
    }
  }

  before(() => {
    globalThis.document = {
      createTextNode: (text) => Object.assign(new Node(), { nodeType: 3, text }),
      createElement: () => Object.assign(new Node(), { nodeType: 1 }),
    };
  });
  after(() => {
    delete globalThis.document;
  });

  test("a long plain line: its head as text, then the marker in a span", () => {
    const el = new Node();
    assert.equal(renderLine(el, "w".repeat(MAX_COLUMNS + 1)), PLAIN);
    assert.deepEqual(el.children.map((n) => [n.nodeType, n.className, n.textContent.length]), [
      [3, "", MAX_COLUMNS],
      [1, "line-cut", cutMarker(MAX_COLUMNS).length],
    ]);
  });

  test("a cursor move past the cap", () => {
    const el = new Node();
    renderLine(el, "\x1b[31mred\x1b[2147483647Gb");
    assert.deepEqual(el.children.map((n) => [n.className, n.textContent]), [
      ["fg-1", "red"],
      ["line-cut", cutMarker(MAX_COLUMNS)],
    ]);
  });
});
