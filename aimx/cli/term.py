"""Terminal output of the CLI (L3): the colour rules of docs/configuration.md.

Colour is on only when stdout is a terminal and C{NO_COLOR} is unset
(C{CLICOLOR=0} and C{TERM=dumb} turn it off, C{CLICOLOR_FORCE} turns it on);
when off, no escape sequence is ever written.
"""

import json
import sys

_GREEN, _YELLOW, _BOLD, _RED, _DIM = "32", "33", "1", "31", "2"

#: Status marks: the glyph and its colour, or the ASCII form without colour.
_MARKS = {
    "ok": ("✓", _GREEN, "[OK]"),
    "fail": ("✗", _RED, "[FAIL]"),
    "warn": ("⚠", _YELLOW, "[WARN]"),
}


def colour_enabled(stream, environ) -> bool:
    """Whether output to C{stream} may be coloured under C{environ}."""
    if "NO_COLOR" in environ:
        return False
    if environ.get("CLICOLOR_FORCE", "0") != "0":
        return True
    if environ.get("CLICOLOR") == "0" or environ.get("TERM") == "dumb":
        return False
    return stream.isatty()


class Terminal:
    """Lines to stdout/stderr, coloured when allowed, and C{[y/N]}-style prompts."""

    def __init__(self, out=None, err=None, stdin=None, environ=None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.stdin = stdin or sys.stdin
        self.colour = colour_enabled(self.out, {} if environ is None else environ)

    def style(self, text: str, *codes: str) -> str:
        if not self.colour:
            return text
        return f"\x1b[{';'.join(codes)}m{text}\x1b[0m"

    def bold(self, text: str) -> str:
        return self.style(text, _BOLD)

    def dim(self, text: str) -> str:
        return self.style(text, _DIM)

    def mark(self, kind: str) -> str:
        """The status mark C{ok}, C{fail} or C{warn}: a coloured glyph, else C{[OK]}-style."""
        glyph, colour, ascii_form = _MARKS[kind]
        return self.style(glyph, colour) if self.colour else ascii_form

    def say(self, line: str = "") -> None:
        print(line, file=self.out)

    def success(self, line: str) -> None:
        print(self.style(line, _GREEN), file=self.out)

    def hint(self, line: str) -> None:
        print(self.style(line, _YELLOW), file=self.out)

    def warn(self, line: str) -> None:
        print(self.style(line, _YELLOW), file=self.err)

    def error(self, message: str) -> None:
        print(f"{self.style('Error:', _RED, _BOLD)} {message}", file=self.err)

    def yellow(self, text: str) -> str:
        return self.style(text, _YELLOW)

    @property
    def tty(self) -> bool:
        """Whether stdout is a terminal (progress bars are drawn only there)."""
        try:
            return self.out.isatty()
        except (AttributeError, ValueError):
            return False

    def progress(self, line: str) -> None:
        """Redraw the current line of a terminal with C{line} (no newline)."""
        self.out.write("\r\x1b[2K" + line)
        self.out.flush()

    @property
    def interactive(self) -> bool:
        """Whether stdin is a terminal, so that someone can answer a prompt."""
        try:
            return self.stdin.isatty()
        except (AttributeError, ValueError):  # no isatty, or a closed stream
            return False

    def ask(self, prompt: str) -> str | None:
        """Print C{prompt} and read one line; C{None} at end of input."""
        self.out.write(prompt)
        self.out.flush()
        line = self.stdin.readline()
        return line.rstrip("\n") if line else None

    def confirm(self, prompt: str) -> bool:
        """A C{[y/N]} prompt: only C{y}/C{Y} (trimmed) means yes."""
        answer = self.ask(prompt)
        return answer is not None and answer.strip() in ("y", "Y")


def clip(text: str, width: int) -> str:
    """C{text} cut to C{width} characters, the last one an ellipsis when cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_text(cmd) -> str:
    """A hook argv as compact JSON, clipped to 60 characters."""
    return clip(json.dumps(list(cmd), ensure_ascii=False, separators=(",", ":")), 60)


def table(headers, rows, *, right=(), limits=None) -> list[str]:
    """An aligned table: the header line, then one line per row.

    Columns are as wide as their widest cell and two spaces apart; the last one
    is not padded, no line ends in spaces.

    @param right: indexes of columns aligned right (numbers).
    @param limits: column index to the most characters a cell shows (L{clip}).
    """
    limits = limits or {}
    cells = [[clip(str(value), limits.get(i, 1 << 30)) for i, value in enumerate(row)]
             for row in rows]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values):
        parts = []
        for i, value in enumerate(values):
            if i in right:
                parts.append(value.rjust(widths[i]))
            elif i == len(values) - 1:
                parts.append(value)
            else:
                parts.append(value.ljust(widths[i]))
        return "  ".join(parts).rstrip()

    return [line(headers)] + [line(row) for row in cells]


def progress_bar(done: int, total: int, width: int = 30) -> str:
    """C{[#########.....]  45%  45000/100000}."""
    share = done / total if total else 0.0
    filled = int(share * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {share:4.0%}  {done}/{total}"


def print_json(term: Terminal, value) -> None:
    """One JSON document on stdout (the C{--json} of every listing verb)."""
    term.say(json.dumps(value, ensure_ascii=False, indent=2))


def printed_plainly(term: Terminal, rows: list, *, as_json: bool, empty: str) -> bool:
    """A listing's two plain answers: C{--json} prints the rows, no rows says C{empty}.

    @return: whether one of them was printed (else the caller prints its table).
    """
    if as_json:
        print_json(term, rows)
        return True
    if not rows:
        term.say(empty)
        return True
    return False
