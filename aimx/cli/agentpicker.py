"""The interactive agent picker of C{aimx agents setup} (L3; docs/cli.md, "aimx agents").

A checkbox list drawn on stderr: arrows or C{j}/C{k} move, Space toggles,
Enter confirms, C{q}/Esc/Ctrl-C cancel.  With colour on (a capable terminal,
no C{NO_COLOR}) the list is redrawn in place; with colour off nothing but plain
text is written and each change reprints the rows, so it works on a dumb
terminal, in an editor shell, or through a pipe.

Keys come from a I{key source} (C{read() -> str | None}): L{TtyKeys} puts a
real terminal in cbreak mode, L{StreamKeys} reads characters from any text
stream (tests, or a stdin that is not a terminal — then one key per character
and an empty line confirms).  Drawing goes to any text stream, so tests use
C{io.StringIO}.
"""

import os
import re
import select

import attrs

from aimx.agents.install import InstallState
from aimx.agents.registry import Agent

BOLD, DIM, GREEN = "1", "2", "32"
ACCENT = "38;2;185;83;28"  # copper #B9531C
VERY_DIM = "38;2;88;88;88"  # grey #585858

UP, DOWN, TOGGLE, ENTER, CANCEL = "up", "down", "toggle", "enter", "cancel"
REDRAW, IGNORED = "redraw", "ignored"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@attrs.define
class Row:
    """One agent in the list."""

    agent: Agent
    state: InstallState
    selected: bool = False

    @property
    def selectable(self) -> bool:
        return self.state is not InstallState.NOT_DETECTED


def initial_rows(states: list[tuple[Agent, InstallState]]) -> list[Row]:
    """Rows with the defaults: installed-but-not-wired agents pre-selected."""
    return [Row(agent, state, state is InstallState.NOT_WIRED) for agent, state in states]


class Style:
    """Colour and glyph choices for one output stream.

    @param term: anything with C{colour: bool} and C{style(text, *codes)}
        (L{aimx.cli.term.Terminal}).
    """

    def __init__(self, term):
        self.term = term
        self.colour = term.colour

    def __call__(self, text: str, *codes: str) -> str:
        return self.term.style(text, *codes)

    @property
    def caret(self) -> str:
        return self("❯", ACCENT) if self.colour else ">"

    def mark(self, kind: str) -> str:
        """A status mark: C{ok}, C{fail}, C{warn} (L{Terminal.mark}) or C{arrow}."""
        if kind != "arrow":
            return self.term.mark(kind)
        return self("→", ACCENT) if self.colour else "[>]"


def visible_width(text: str) -> int:
    """The printed width of C{text}: escape sequences do not count."""
    return len(_ANSI.sub("", text))


def pad(text: str, width: int) -> str:
    """C{text} padded with spaces to C{width} visible columns."""
    return text + " " * max(0, width - visible_width(text))


def header_lines(user: str | None, style: Style) -> list[str]:
    who = f" for `{user}`" if user else ""
    return [
        style(f"Setting up MCP integration for AI agents{who}.", BOLD),
        "Select which AI agents you want to set up AIMX MCP for:",
        "",
    ]


def row_lines(rows: list[Row], cursor: int, style: Style) -> list[str]:
    """The rows and the key legend."""
    lines = []
    for i, row in enumerate(rows):
        caret = style.caret if i == cursor and row.selectable else " "
        name = row.agent.display
        if not row.selectable:
            mark = style("[-]", DIM)
            label = style(name, DIM) + " " + style("(not detected)", VERY_DIM)
        else:
            mark = style("[x]", BOLD) if row.selected else "[ ]"
            label = name
            if row.state is InstallState.WIRED:
                label += "  " + style("(AIMX MCP wired)", VERY_DIM)
        lines.append(f"{caret} {mark} {label}")
    lines.append(
        f"  {style.mark('arrow')} " + style("Space toggles, Enter confirms, q cancels.", DIM)
    )
    return lines


def _step(rows: list[Row], cursor: int, delta: int) -> int:
    n = len(rows)
    i = cursor
    for _ in range(n):
        i = (i + delta) % n
        if rows[i].selectable:
            return i
    return cursor


def pick(rows: list[Row], keys, stream, style: Style, user: str | None = None) -> list[Row] | None:
    """Run the picker until Enter or a cancel key.

    @param rows: the rows; their C{selected} flags are updated in place.
    @param keys: a key source; C{None} from it (end of input) cancels.
    @param stream: where the screen is drawn (stderr).
    @return: the selected rows in list order, or C{None} when cancelled.
    """
    cursor = next((i for i, row in enumerate(rows) if row.selectable), 0)
    batched = getattr(keys, "line_mode", False)
    drawn = 0
    for line in header_lines(user, style):
        stream.write(line + "\n")
    if style.colour:
        stream.write("\x1b[?25l")  # hide the cursor while the list is live
    try:
        draw = True
        while True:
            if draw:
                lines = row_lines(rows, cursor, style)
                if drawn and style.colour:
                    stream.write(f"\x1b[{drawn}F\x1b[J")
                elif drawn:
                    stream.write("\n")
                stream.write("".join(line + "\n" for line in lines))
                stream.flush()
                drawn = len(lines)
            key = _next_key(keys)
            if key in (CANCEL, None):
                return None
            if key == ENTER:
                return [row for row in rows if row.selected]
            if key == DOWN:
                cursor = _step(rows, cursor, 1)
            elif key == UP:
                cursor = _step(rows, cursor, -1)
            elif key == TOGGLE and rows[cursor].selectable:
                rows[cursor].selected = not rows[cursor].selected
            # Line input shows the result once per submitted line.
            draw = key == REDRAW if batched else key in (UP, DOWN, TOGGLE)
    finally:
        if style.colour:
            stream.write("\x1b[?25h")
            stream.flush()


def _next_key(keys) -> str | None:
    try:
        return keys.read()
    except KeyboardInterrupt:
        return CANCEL


def task_lines(picked: list[Row], style: Style) -> list[str]:
    """The confirmation list (without the C{Confirm? [Y/n]} prompt)."""
    lines = ["", style("Tasks to perform:", BOLD), ""]
    for n, row in enumerate(picked, 1):
        if row.state is InstallState.WIRED:
            lines.append(
                f"  {n}. Re-install AIMX MCP for {style(row.agent.display, BOLD)} "
                + style("(refresh files)", DIM)
            )
        else:
            lines.append(f"  {n}. Install AIMX MCP for {style(row.agent.display, BOLD)}")
    lines.append("")
    return lines


def summary_lines(results: list[tuple[str, bool, str]], style: Style) -> list[str]:
    """The closing table.

    @param results: C{(display name, ok, destination or error)} per agent.
    """
    rows = [
        (
            name,
            f"{style.mark('ok')} ok" if ok else f"{style.mark('fail')} failed",
            detail if ok else f"(error: {detail})",
        )
        for name, ok, detail in results
    ]
    name_w = max([visible_width("Agent")] + [visible_width(r[0]) for r in rows])
    status_w = max([visible_width("Status")] + [visible_width(r[1]) for r in rows])
    lines = [
        "",
        style("Summary", BOLD),
        "",
        f"  {pad('Agent', name_w)}  {pad('Status', status_w)}  Destination",
        f"  {'-' * name_w}  {'-' * status_w}  {'-' * len('Destination')}",
    ]
    lines += [f"  {pad(n, name_w)}  {pad(s, status_w)}  {d}" for n, s, d in rows]
    return lines


# -- key sources --------------------------------------------------------------------


class _Decoder:
    """Turn characters into keys; C{pending()} tells a lone Esc from a sequence."""

    line_mode = False

    def __init__(self):
        self._line_has_keys = False

    def read(self) -> str | None:
        ch = self.read_char()
        if ch == "":
            return None
        if ch in ("\n", "\r"):
            if self.line_mode and self._line_has_keys:
                self._line_has_keys = False
                return REDRAW
            return ENTER
        self._line_has_keys = True
        if ch == "\x1b":
            if not self.pending():
                return CANCEL
            nxt = self.read_char()
            if nxt in ("[", "O"):
                final = self.read_char()
                while final and not final.isalpha() and final != "~":
                    final = self.read_char()
                return {"A": UP, "B": DOWN}.get(final, IGNORED)
            return CANCEL
        if ch in ("q", "Q", "\x03"):
            return CANCEL
        if ch in ("j", "J", "\x0e"):
            return DOWN
        if ch in ("k", "K", "\x10"):
            return UP
        if ch == " ":
            return TOGGLE
        return IGNORED

    def read_char(self) -> str:
        raise NotImplementedError

    def pending(self) -> bool:
        raise NotImplementedError


class StreamKeys(_Decoder):
    """Keys from a text stream, one character at a time.

    @param line_mode: the stream is line-buffered input (a pipe, a terminal
        that cannot be put in cbreak mode): a newline ending a line that held
        keys only submits them; an empty line is Enter.
    """

    def __init__(self, stream, line_mode: bool = False):
        super().__init__()
        self.stream = stream
        self.line_mode = line_mode
        self._buffer = ""

    def read_char(self) -> str:
        if self._buffer:
            ch, self._buffer = self._buffer[0], self._buffer[1:]
            return ch
        return self.stream.read(1)

    def pending(self) -> bool:
        # An escape sequence arrives in one piece; peek at what follows.
        if not self._buffer:
            self._buffer = self.stream.read(1)
        return self._buffer not in ("", "\n")


class TtyKeys(_Decoder):
    """Keys from a terminal file descriptor in cbreak mode (use as a context manager)."""

    def __init__(self, fd: int):
        super().__init__()
        self.fd = fd
        self._saved = None

    def __enter__(self):
        import termios
        import tty

        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd)
        return self

    def __exit__(self, *exc):
        import termios

        if self._saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
        return False

    def read_char(self) -> str:
        data = os.read(self.fd, 1)
        return data.decode("latin-1") if data else ""

    def pending(self) -> bool:
        # The rest of an arrow-key sequence follows within a few milliseconds.
        ready, _, _ = select.select([self.fd], [], [], 0.05)
        return bool(ready)


def open_keys(stdin):
    """The best key source for C{stdin}: cbreak mode on a terminal, else line mode."""
    try:
        if stdin.isatty():
            import termios

            keys = TtyKeys(stdin.fileno())
            termios.tcgetattr(keys.fd)
            return keys
    except (OSError, ValueError, ImportError, AttributeError):
        pass
    return _NullContext(StreamKeys(stdin, line_mode=True))


class _NullContext:
    def __init__(self, keys):
        self.keys = keys

    def __enter__(self):
        return self.keys

    def __exit__(self, *exc):
        return False
