"""HTML to Markdown for HTML-only mail (L0, pure, one linear pass).

A tokenizer over the tag boundaries plus a small emitter: headings, paragraphs,
line breaks, lists, links, images with alt text, emphasis, code, quotes and rules
become Markdown; everything a reader never sees (comments, declarations, head
metadata, style, script, template, title) is dropped; every tag is removed and
entities are decoded.  It replaces markdownify on the hot path: on a 60 KiB
newsletter it is about ten times faster (see bench/README.md).
"""

import html
import re

import attrs

# One token per match: text (with any '<' that cannot start a tag), a comment, a
# tag (quoted attribute values may hold '>'; lengths are bounded so hostile input
# stays linear), a declaration, processing instruction or end tag fragment, or a
# '<' + letter that does not form a complete tag.
_TOKEN = re.compile(
    r"""([^<]+(?:<(?![a-zA-Z/!?])[^<]*)*|(?:<(?![a-zA-Z/!?])[^<]*)+)"""
    r"""|<!--.*?(?:-->|\Z)"""
    r"""|<(/?)([a-zA-Z][a-zA-Z0-9:-]*)"""
    r"""((?:[^<>"']{0,1024}(?:"[^"]{0,1024}"|'[^']{0,1024}')){0,64}[^<>"']{0,1024})>"""
    r"""|<[!?/][^>]*>?"""
    r"""|<""",
    re.S,
)
_ATTR = re.compile(r"""([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*=\s*("[^"]*"|'[^']*'|[^\s>"']+)""")
_SPACE = re.compile(r"\s+")
_BLANKS = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")
_TRAILING = re.compile(r"[ \t]+\n")

_MAX_MARKS = 64  # open links/emphasis/quotes tracked; deeper nesting is plain text
_MAX_INDENT = 8

_HIDDEN = frozenset({"script", "style", "template", "title"})
_BLOCKS = frozenset(
    "p div section article header footer main nav aside table thead tbody tfoot ul ol dl "
    "dd dt form fieldset figure figcaption address center details summary body html "
    "caption".split()
)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_EMPHASIS = {"b": "**", "strong": "**", "i": "*", "em": "*", "code": "`", "tt": "`"}


def _attrs(text: str) -> dict[str, str]:
    found = {}
    for name, value in _ATTR.findall(text):
        if value[:1] in "\"'":
            value = value[1:-1]
        found.setdefault(name.lower(), html.unescape(value))
    return found


class _Emitter:
    """Collects Markdown pieces, managing line breaks between blocks."""

    def __init__(self):
        self.out: list[str] = []
        self.breaks = 0  # newlines owed before the next text
        self.pre = 0
        self.lists: list[list] = []  # [ordered, counter]
        self.marks: list[tuple[str, int, str]] = []  # (tag, index, extra)

    def text(self, data: str):
        if not self.pre:
            data = _SPACE.sub(" ", data)
            if self.breaks or not self.out or self.out[-1].endswith(("\n", " ")):
                data = data.lstrip(" ")
        if not data:
            return
        self.flush()
        self.out.append(data)

    def flush(self):
        if self.breaks and self.out:
            self.out.append("\n" * self.breaks)
        self.breaks = 0

    def block(self, lines: int = 2):
        self.breaks = max(self.breaks, lines)

    def start(self, tag: str, attrs: str):
        if tag in _BLOCKS:
            self.block()
        elif tag in _HEADINGS:
            self.block()
            self.flush()
            self.out.append("#" * _HEADINGS[tag] + " ")
        elif tag == "br":
            self.out.append("\n")
        elif tag in ("tr", "li"):
            self.block(1)
            if tag == "li":
                self.flush()
                depth = min(max(len(self.lists) - 1, 0), _MAX_INDENT)
                if self.lists and self.lists[-1][0]:
                    self.lists[-1][1] += 1
                    self.out.append("   " * depth + f"{self.lists[-1][1]}. ")
                else:
                    self.out.append("   " * depth + "- ")
        elif tag in ("td", "th"):
            if self.out and not self.out[-1].endswith((" ", "\n")):
                self.out.append(" ")
        elif tag == "hr":
            self.block()
            self.flush()
            self.out.append("---")
            self.block()
        elif tag == "pre":
            self.block()
            self.flush()
            self.out.append("```\n")
            self.pre += 1
        elif tag == "blockquote":
            self.block()
            self.flush()
            self._open_mark(tag, "")
        elif tag == "a":
            self._open_mark(tag, _attrs(attrs).get("href", ""))
        elif tag in _EMPHASIS:
            self._open_mark(tag, "")
        elif tag == "img":
            alt = _attrs(attrs).get("alt", "").strip()
            if alt:
                self.text(f"![{alt}]({_attrs(attrs).get('src', '')})")
        if tag in ("ul", "ol"):
            self.lists.append([tag == "ol", 0])

    def end(self, tag: str):
        if tag in _BLOCKS or tag in _HEADINGS:
            self.block()
        elif tag == "pre" and self.pre:
            self.pre -= 1
            if not self.out[-1].endswith("\n"):
                self.out.append("\n")
            self.out.append("```")
            self.block()
        elif tag in ("a", "blockquote") or tag in _EMPHASIS:
            self._close_mark(tag)
        if tag in ("ul", "ol") and self.lists:
            self.lists.pop()

    def _open_mark(self, tag: str, extra: str):
        if len(self.marks) < _MAX_MARKS:
            self.marks.append((tag, len(self.out), extra))

    def _close_mark(self, tag: str):
        for i in range(len(self.marks) - 1, -1, -1):
            if self.marks[i][0] == tag:
                break
        else:
            return
        _, index, extra = self.marks.pop(i)
        inner = "".join(self.out[index:])
        del self.out[index:]
        if tag == "blockquote":
            quoted = "\n".join("> " + line for line in inner.strip("\n").split("\n"))
            self.out.append(quoted)
            self.block()
        elif not inner.strip():
            return
        elif tag == "a":
            href = extra.strip()
            if not href or href.lower().startswith("javascript:") or href == inner.strip():
                self.out.append(inner)
            else:
                self.out.append(f"[{inner.strip()}]({href})")
        else:
            mark = _EMPHASIS[tag]
            self.out.append(f"{mark}{inner.strip()}{mark}")


def html_to_markdown(source: str) -> str:
    """Convert an HTML document to Markdown text without any tags.

    @param source: the decoded HTML.
    @return: Markdown; blank lines collapsed, ending in one newline (or empty).
    """
    emit = _Emitter()
    pos, size = 0, len(source)
    match = _TOKEN.match
    while pos < size:
        token = match(source, pos)
        pos = token.end()
        text, slash, name = token.group(1, 2, 3)
        if text is not None:
            emit.text(html.unescape(text) if "&" in text else text)
        elif name is None:
            if token.group(0) == "<":
                # A tag that never closes properly: like a browser, it runs to
                # the next '>' (or the end) and shows nothing.
                end = source.find(">", pos)
                pos = size if end == -1 else end + 1
        elif slash:
            emit.end(name.lower())
        else:
            name = name.lower()
            if name in _HIDDEN:
                close = re.compile(rf"</{name}\s*>", re.I).search(source, pos)
                pos = size if close is None else close.end()
            else:
                emit.start(name, token.group(4))
    while emit.marks:
        emit._close_mark(emit.marks[-1][0])
    text = _TRAILING.sub("\n", "".join(emit.out))
    text = _BLANKS.sub("\n\n", text).strip("\n ")
    return text + "\n" if text else ""


@attrs.frozen
class HtmlText:
    """An HTML body as the agent reads it.

    @ivar markdown: the visible text as Markdown.
    @ivar hidden: characters of text left out because a reader never sees them.
    """

    markdown: str
    hidden: int = 0


def convert(source: str) -> HtmlText:
    """Convert an HTML document to Markdown, reporting what was hidden."""
    text, removed = strip_invisible(html_to_markdown(source))
    return HtmlText(text, removed)


# Invisible characters an LLM reads but a person never sees: zero-width space,
# word joiner, zero-width no-break space (BOM), bidi embeddings, overrides and
# isolates.  ZWJ and ZWNJ stay: emoji sequences, Persian and Indic scripts need them.
_INVISIBLE = re.compile("[\u200b\u2060\ufeff\u202a-\u202e\u2066-\u2069]")


def strip_invisible(text: str) -> tuple[str, int]:
    """C{text} without its invisible characters, and how many were removed.

    A BOM at the very start is a byte-order mark, not hidden text: it goes
    uncounted.

    @param text: body text.
    @return: the cleaned text and the count of characters removed.
    """
    if text.isascii():
        return text, 0
    if text.startswith("\ufeff"):
        text = text[1:]
    return _INVISIBLE.subn("", text)
