"""static/js/term.js in the browser: a log line as a terminal would show it."""

from __future__ import annotations

from playwright.sync_api import Page

CASES = [
    ("plain text", "plain text"),
    ("tab\tstays", "tab\tstays"),
    ("abcdef\rXY", "XYcdef"),  # \r returns; later text overwrites
    ("progress 10%\rprogress 100%", "progress 100%"),
    ("50%\r\x1b[K7%", "7%"),  # erase to the end of the line
    ("ab\bC", "aC"),
    ("trailing\r", "trailing"),
    ("\x1b[31mred\x1b[0m", "red"),
    ("bell\x07 and \x1b]0;title\x07osc", "bell and osc"),
    ("unfinished \x1b[3", "unfinished "),
    ("col\x1b[10Gx", "col      x"),
    ("emoji 😀\rE", "Emoji 😀"),
]


def test_terminal_rendering_of_a_line(page: Page) -> None:
    page.goto("/")
    results = page.evaluate(
        """async (cases) => {
            const term = await import('/static/js/term.js');
            return cases.map(([text]) => {
                const el = document.createElement('div');
                term.renderLine(el, text);
                return [term.visibleText(text), el.textContent];
            });
        }""",
        CASES,
    )
    for (text, expected), (visible, shown) in zip(CASES, results, strict=True):
        assert visible == expected, (text, visible)
        assert shown == expected, (text, shown)


def test_sgr_attributes_become_classes_and_carry_over_lines(page: Page) -> None:
    page.goto("/")
    spans = page.evaluate(
        """async () => {
            const term = await import('/static/js/term.js');
            const out = [];
            let state = term.PLAIN;
            for (const line of ['\\x1b[1;4;33mwarn', 'still\\x1b[22m thin\\x1b[0m plain',
                                '\\x1b[7minverse\\x1b[27m \\x1b[48;2;1;2;3mtrue\\x1b[49m',
                                '\\x1b[95;100mbright']) {
                const el = document.createElement('div');
                state = term.renderLine(el, line, state);
                out.push([...el.childNodes].map((n) => [n.textContent,
                    n.nodeType === 1 ? n.className : '', n.nodeType === 1 ? n.style.cssText : '']));
            }
            return out;
        }"""
    )
    assert spans[0] == [["warn", "fg-3 sgr-bold sgr-underline", ""]]
    # The state carries over to the next line of the stream, as in a terminal.
    assert spans[1] == [
        ["still", "fg-3 sgr-bold sgr-underline", ""],
        [" thin", "fg-3 sgr-underline", ""],
        [" plain", "", ""],
    ]
    assert spans[2][0] == ["inverse", "sgr-inverse fg-inverse bg-inverse", ""]
    assert spans[2][2] == ["true", "", "background-color: rgb(1, 2, 3);"]
    assert spans[3] == [["bright", "fg-13 bg-8", ""]]
