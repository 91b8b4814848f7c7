"""HTML mail bodies to Markdown, without the text a reader never sees (L0, pure).

The HTML is parsed by Lexbor (through selectolax), a C implementation of the
WHATWG HTML5 parsing algorithm, so the tree is the one a browser builds: implied
and misnested tags, tables, entities and comments are handled as a mail client
renders them.  One walk over that tree (L{_Walk}) writes CommonMark/GFM: blocks
separated by blank lines, nested lists indented under their item, GFM tables for
data tables (empty cells kept) while layout tables become their cells' blocks,
fenced code whose fence is longer than any backtick run inside, C{[text](url)}
links (C{javascript:}-like links and tracking pixels dropped), images as their
alt text, C{<br>} as a hard break (two spaces, newline); head, script, style,
template, SVG and comments are dropped.  Text is not escaped (the agent reads
the Markdown as text), except C{|} inside table cells, C{[]} inside link text
and a line of only C{-} or C{=} after a hard break (it would make the line
above a heading).

Hidden content (L{_Effect}, L{_Style}): elements hidden by C{display:none},
the C{hidden} attribute (unless a style sets another display), C{mso-hide:all},
C{opacity:0}, a zero height or width with C{overflow:hidden}, or off-screen
positioning (-500px or more) are left out with everything in them; text under
C{visibility:hidden} (a descendant may show itself again), text whose font
size is zero (or at most 1px/1pt) and text whose colour is that
of its background (each channel within 8/255, or transparent; the background
is the nearest one set by C{bgcolor} or a C{background} style, white when none
is, unknown under a background image) is left out too.  Declarations come from
C{style} attributes and from simple top-level stylesheet rules (C{tag},
C{.class}, C{#id}, C{tag.class}).  Invisible characters (L{strip_invisible})
are removed from the text.  How much was removed is reported (L{HtmlText}).

Quoted history (L{_opens_history}): Outlook writes the message it answers
unquoted below a header C{<div>} (C{id="divRplyFwdMsg"}, the new Outlook's
reference-message container, or Outlook for Windows' and Mac's top-bordered
header with its "From:"/"Sent:" labels, in any language).  From that div to the
end of the document the walk writes a Markdown quote, so the body shows the
history as the quote it is and L{aimx.core.replytext} finds it without the
HTML; only a header outside lists, quotes, tables and emphasis counts, and only
the first.

Bounds (docs/design.md, "Bound everything an outsider controls"): the tree builder
takes time quadratic in the depth of open elements, so a document whose
elements could nest deeper than L{MAX_DEPTH} is cut there (L{_depth_cut});
the walk is iterative; list and quote nesting, inherited emphasis, table
columns and style text are capped, so the Markdown is at most a small multiple
of the HTML.
"""

import re

import attrs
from selectolax.lexbor import LexborHTMLParser

#: The deepest element nesting given to the tree builder; a document that may
#: go deeper is cut at the tag that would (L{_depth_cut}).
MAX_DEPTH = 512
#: Documents with fewer tags than this are parsed as they are: even in the worst
#: shapes found they cost the tree builder about half a second.
_CHEAP_TAGS = 10_000
TRUNCATED = "\n\n[...HTML body truncated: elements nested too deeply...]"

_MAX_FRAMES = 32  # nested containers (items, quotes, cells) with their own blocks
_MAX_LIST_DEPTH = 8  # deeper lists are indented no further
_MAX_QUOTE_DEPTH = 8
_MAX_MARKS = 16  # open emphasis/links per container
_MAX_COLUMNS = 64
_MAX_COLSPAN = 16
_MAX_STYLE = 4096  # characters of a style attribute read
_MAX_SHEET = 65536  # characters of stylesheet text read
_MAX_RULES = 1000


@attrs.frozen
class HtmlText:
    """An HTML body as the agent reads it.

    @ivar markdown: the visible text as Markdown, ending in one newline (or empty).
    @ivar hidden: characters of text left out because a reader never sees them
        (whitespace and invisible format characters not counted).
    """

    markdown: str
    hidden: int = 0


def html_to_markdown(source: str) -> str:
    """Convert an HTML document to Markdown text without any tags.

    @param source: the decoded HTML.
    @return: L{convert}'s Markdown.
    """
    return convert(source).markdown


def convert(source: str) -> HtmlText:
    """Convert an HTML document to Markdown, leaving out hidden content.

    @param source: the decoded HTML (the caller caps its size).
    @return: the Markdown and how much hidden text was left out.
    """
    cut = _depth_cut(source)
    if cut is not None:
        source = source[:cut]
    root = LexborHTMLParser(source).root
    walk = _Walk(_Sheet.of(root))
    if root is not None:
        walk.run(root)
    markdown = walk.markdown()
    if cut is not None:
        markdown = (markdown.rstrip("\n") + TRUNCATED).lstrip("\n") + "\n"
    return HtmlText(markdown, walk.hidden)


# -- invisible characters ------------------------------------------------------

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


# What does not count as hidden text: whitespace, format characters (Cf) and the
# fillers preheaders pad with (combining grapheme joiner, Hangul fillers, braille blank).
_NOT_TEXT = re.compile(
    "[\\s\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u2800\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb]+"
)


def _visible_length(text: str) -> int:
    return len(_NOT_TEXT.sub("", text)) if text else 0


# -- the depth guard -----------------------------------------------------------

_SCAN = re.compile(r"<!--.*?(?:-->|\Z)|<(/?)([a-zA-Z][^\t\n\f\r />]*)([^>]*)>?", re.S)
_VOID = frozenset(
    "area base basefont bgsound br col embed frame hr image img input keygen link meta "
    "param source track wbr html head body".split()
)
_RAW = frozenset("script style textarea title xmp iframe noembed noframes".split())
_FORMATTING = frozenset("a b big code em font i nobr s small strike strong tt u".split())
# The spec's "special" elements (HTML §13.2.4.2), which stop most implied closes.
_SPECIAL = frozenset(
    "address applet area article aside base basefont bgsound blockquote body br button "
    "caption center col colgroup dd details dir div dl dt embed fieldset figcaption figure "
    "footer form frame frameset h1 h2 h3 h4 h5 h6 head header hgroup hr html iframe img "
    "input keygen li link listing main marquee menu meta nav noembed noframes noscript "
    "object ol p param plaintext pre script search section select source style summary "
    "table tbody td template textarea tfoot th thead title tr track ul wbr xmp "
    "svg math foreignobject desc mi mo mn ms mtext annotation-xml".split()
)
# Scope barriers: the default, button and list item scopes together, and select.
_SCOPE = frozenset(
    "applet caption html table td th marquee object template button ol ul select svg "
    "math foreignobject desc mi mo mn ms mtext annotation-xml".split()
)
# What stops li (dd, dt) from closing an open one: special elements but these.
_LI_BARRIERS = _SPECIAL - {"address", "div", "p", "li"}
_DD_BARRIERS = _SPECIAL - {"address", "div", "p", "dd", "dt"}
_TABLE_PARTS = frozenset({"td", "th", "tr", "tbody", "thead", "tfoot", "table"})
# Start tags that close an open p in button scope.
_CLOSES_P = frozenset(
    "address article aside blockquote center details dialog dir div dl fieldset figcaption "
    "figure footer form h1 h2 h3 h4 h5 h6 header hgroup hr listing main menu nav ol p pre "
    "search section summary ul li dd dt plaintext xmp".split()  # not table: quirks mode
)
# Start tags that close the last open element of their family (a new li closes
# the open li...) when no barrier (L{_OpenElements.above}) lies between.
_SIBLINGS = {
    "li": (("li",), "li"), "dd": (("dd", "dt"), "dd"), "dt": (("dd", "dt"), "dd"),
    "td": (("td", "th"), "table"), "th": (("td", "th"), "table"), "tr": (("tr",), "table"),
    "tbody": (("tbody", "thead", "tfoot"), "table"),
    "thead": (("tbody", "thead", "tfoot"), "table"),
    "tfoot": (("tbody", "thead", "tfoot"), "table"),
}
_FOREIGN = frozenset({"svg", "math"})
_MARKERS = frozenset("applet caption marquee object template td th".split())
# Start tags before which the builder does not reopen closed formatting elements.
_NO_RECONSTRUCT = _CLOSES_P | _TABLE_PARTS | frozenset(
    "caption col colgroup template html body head frameset hr".split())
_BARRIER_SETS = {"special": _SPECIAL, "scope": _SCOPE, "li": _LI_BARRIERS,
                 "dd": _DD_BARRIERS, "table": frozenset({"html", "table", "template", *_FOREIGN})}
# Per element name: the barrier kinds it belongs to.
_KINDS_OF = {
    name: frozenset(kind for kind, members in _BARRIER_SETS.items() if name in members)
    for name in frozenset().union(*_BARRIER_SETS.values())
}


class _OpenElements:
    """A conservative model of the tree builder's stack of open elements
    (HTML §13.2.6), for L{_depth_cut}.

    It closes an element only where the tree builder surely does: its own end
    tag with no barrier above it, a new sibling of its family (li, dd/dt, table
    rows and cells, options), a block start tag closing a p, a table started in
    a table; it adds the tbody and tr the builder implies.  Inside SVG and
    MathML every start tag nests.  Formatting elements closed by another
    element's end tag stay counted (at most three per tag text, as the
    builder's "Noah's Ark" clause keeps) and are reopened before text and
    inline start tags as the builder reopens them, until their own end tag or
    the table cell (or other marker) holding them closes.  Checked against
    html5lib's stack on random tag soups: never more than a few levels below
    it.  Amortised constant work per tag.
    """

    def __init__(self) -> None:
        self.names: list[str] = []
        self.keys: list[str] = []
        # Per level and barrier kind: the level of the topmost barrier at or below it.
        self.barriers: dict[str, list[int]] = {kind: [] for kind in _BARRIER_SETS}
        self.where: dict[str, list[int]] = {}
        self.pending: list[dict[str, int]] = [{}]  # per marker: tag text -> count
        self.pending_names: list[dict[str, list[str]]] = [{}]
        self.pending_total = 0
        self.foreign = 0  # open svg and math elements

    def depth(self) -> int:
        return len(self.names) + self.pending_total

    def above(self, index: int, kind: str) -> bool:
        """Whether a barrier of C{kind} lies above level C{index}."""
        levels = self.barriers[kind]
        return bool(levels) and levels[-1] > index

    def push(self, name: str, key: str) -> None:
        level = len(self.names)
        kinds = _KINDS_OF.get(name, ())
        for kind, levels in self.barriers.items():
            levels.append(level if kind in kinds else levels[-1] if levels else -1)
        self.names.append(name)
        self.keys.append(key)
        positions = self.where.get(name)
        if positions is None:
            self.where[name] = [level]
        else:
            positions.append(level)
        if name in _MARKERS:
            self.pending.append({})
            self.pending_names.append({})

    def pop_to(self, index: int) -> None:
        """Pop the element at level C{index} and everything above it."""
        for level in range(len(self.names) - 1, index - 1, -1):
            name = self.names[level]
            self.where[name].pop()
            if name in _FOREIGN:
                self.foreign -= 1
            if name in _MARKERS and len(self.pending) > 1:
                self.pending_total -= sum(self.pending.pop().values())
                self.pending_names.pop()
            elif name in _FORMATTING and level != index:
                self._pend(name, self.keys[level])
        del self.names[index:], self.keys[index:]
        for levels in self.barriers.values():
            del levels[index:]

    def reconstruct(self) -> None:
        """Reopen the formatting elements closed by other elements' end tags (the
        builder does so before text and before most inline start tags)."""
        if not self.pending_names[-1]:
            return
        reopened = self.pending_names[-1]
        self.pending[-1] = {}
        self.pending_names[-1] = {}
        for name, keys in reopened.items():
            self.pending_total -= len(keys)
            for key in keys:
                self.push(name, key)

    def _pend(self, name: str, key: str) -> None:
        bucket = self.pending[-1]
        if bucket.get(key, 0) < 3:
            bucket[key] = bucket.get(key, 0) + 1
            self.pending_names[-1].setdefault(name, []).append(key)
            self.pending_total += 1

    def start(self, name: str, key: str) -> None:
        if self.foreign:
            # SVG and MathML: every start tag nests (the few that break out and
            # close elements are taken as nesting too).
            self.push(name, key)
            return
        if name == "option" or name == "optgroup":
            while self.names and self.names[-1] in ("option", "optgroup") and not (
                    name == "option" and self.names[-1] == "optgroup"):
                self.pop_to(len(self.names) - 1)
        family = _SIBLINGS.get(name)
        if family is not None:
            index = self._last(family[0])
            # Table parts act only inside a table (elsewhere the builder ignores them).
            floor = self._last(("table",)) if family[1] == "table" else -1
            if index > floor and (family[1] != "table" or floor >= 0) and not self.above(
                    index, family[1]):
                self.pop_to(index)
        elif name in _HEADINGS and self.names and self.names[-1] in _HEADINGS:
            self.pop_to(len(self.names) - 1)
        if name in _CLOSES_P and self.where.get("p"):
            index = self.where["p"][-1]
            if not self.above(index, "scope"):
                self.pop_to(index)
        if name == "table" and self.where.get("table"):
            # A table started in a table, outside its cells, closes it.
            table = self.where["table"][-1]
            if table > self._last(("td", "th", "caption")):
                self.pop_to(table)
        if name in _TABLE_PARTS and name != "table" and self.where.get("table"):
            # A row or cell straight in a table gets the implied tbody and tr.
            table = self.where["table"][-1]
            if name != "tbody" and name != "thead" and name != "tfoot":
                if self._last(("tbody", "thead", "tfoot")) < table:
                    self.push("tbody", "tbody")
                if name != "tr" and self._last(("tr",)) < table:
                    self.push("tr", "tr")
        self.push(name, key)
        if name in _FOREIGN:
            self.foreign += 1

    def _last(self, names) -> int:
        return max((self.where[n][-1] for n in names if self.where.get(n)), default=-1)

    def end(self, name: str) -> None:
        positions = self.where.get(name)
        if self.foreign:
            # Foreign content: only the current element is surely closed.
            if self.names and self.names[-1] == name:
                self.pop_to(len(self.names) - 1)
            return
        if not positions:
            keys = self.pending_names[-1].get(name)
            if keys:  # a reopened formatting element's own end tag
                key = keys.pop()
                self.pending[-1][key] -= 1
                self.pending_total -= 1
            return
        index = positions[-1]
        if name in _FORMATTING or name not in _SPECIAL:
            barrier = "special"
        elif name in _TABLE_PARTS:
            if name != "table" and index < self._last(("table",)) or not self.where.get("table"):
                return  # outside a table (or of an outer one): ignored
            barrier = "table"
        else:
            barrier = "scope"
        if not self.above(index, barrier):
            self.pop_to(index)


def _depth_cut(source: str, limit: int = MAX_DEPTH, cheap: int = _CHEAP_TAGS) -> int | None:
    """Where to cut C{source} so that the tree builder never nests elements
    deeper than C{limit} (L{_OpenElements}), or L{None} for no cut.

    The HTML5 tree builder's scope checks walk the stack of open elements, so
    deep nesting costs quadratic time (Lexbor: 100 000 nested divs take 16 s;
    browsers cap the depth inside their tree builder).  A document with fewer
    than L{_CHEAP_TAGS} tags is cheap whatever its shape and is not scanned.
    """
    if source.count("<") < cheap:
        return None
    model = _OpenElements()
    pos = 0
    while True:
        match = _SCAN.search(source, pos)
        if match is None:
            return None
        if match.start() > pos and model.pending_total:
            model.reconstruct()  # text before this tag
        pos = match.end()
        name = match[2]
        if name is None:
            continue  # a comment
        name = name.lower()
        if match[1]:
            model.end(name)
            continue
        if model.pending_total and name not in _NO_RECONSTRUCT:
            model.reconstruct()
        if name in _VOID:
            continue
        if name in _RAW:
            close = re.compile(rf"</{name}[\t\n\f\r />]", re.I).search(source, pos)
            if close is None:
                return None
            pos = close.start()
            continue
        if name == "plaintext":
            return None
        # Formatting elements are told apart by their attributes (Noah's Ark).
        model.start(name, name + match[3][:256] if name in _FORMATTING else name)
        if model.depth() > limit:
            return match.start()


# -- styles ----------------------------------------------------------------------

_BASIC_COLOURS = {
    "white": (255, 255, 255), "black": (0, 0, 0), "red": (255, 0, 0), "lime": (0, 255, 0),
    "blue": (0, 0, 255), "yellow": (255, 255, 0), "cyan": (0, 255, 255), "aqua": (0, 255, 255),
    "magenta": (255, 0, 255), "fuchsia": (255, 0, 255), "silver": (192, 192, 192),
    "gray": (128, 128, 128), "grey": (128, 128, 128), "maroon": (128, 0, 0),
    "olive": (128, 128, 0), "green": (0, 128, 0), "purple": (128, 0, 128),
    "teal": (0, 128, 128), "navy": (0, 0, 128), "whitesmoke": (245, 245, 245),
    "snow": (255, 250, 250), "ivory": (255, 255, 240), "ghostwhite": (248, 248, 255),
}
_HEX = re.compile(r"#?([0-9a-f]{3,8})\Z")
_RGB = re.compile(r"rgba?\(\s*([\d.]+%?)[\s,]+([\d.]+%?)[\s,]+([\d.]+%?)(?:[\s,/]+([\d.]+%?))?\s*\)")
_LENGTH = re.compile(r"(-?[\d.]+)(px|pt|em|rem|%|in|cm|mm|pc|vw|vh)?\Z")
_FONT_SIZE = re.compile(r"(?:^|\s)(-?[\d.]+)(px|pt|em|rem|%)?(?:/|\s|\Z)")
_IMPORTANT = re.compile(r"\s*!\s*important\s*\Z")
_COMMENT = re.compile(r"/\*.*?(?:\*/|\Z)", re.S)
_TRANSPARENT = "transparent"
_WHITE = (255, 255, 255)
_LINK_BLUE = (0, 0, 238)  # what a browser shows a link in when no colour is given


def _colour(value: str):
    """A CSS colour as C{(r, g, b)}, C{"transparent"}, the keyword itself when
    unknown, or L{None} for no colour (C{inherit}, C{currentcolor}...)."""
    value = value.strip()
    if not value or value in ("inherit", "initial", "unset", "currentcolor", "none"):
        return None
    if value == _TRANSPARENT:
        return _TRANSPARENT
    if value in _BASIC_COLOURS:
        return _BASIC_COLOURS[value]
    match = _HEX.match(value)
    if match is not None:
        digits = match[1]
        if len(digits) in (3, 4):
            digits = "".join(d * 2 for d in digits)
        if len(digits) in (6, 8):
            if len(digits) == 8 and digits[6:] == "00":
                return _TRANSPARENT
            return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))
        return value
    match = _RGB.match(value)
    if match is not None:
        try:
            channels = [float(c[:-1]) * 2.55 if c.endswith("%") else float(c)
                        for c in match.groups()[:3]]
            if match[4] is not None:
                alpha = match[4]
                if (float(alpha[:-1]) / 100 if alpha.endswith("%") else float(alpha)) < 0.04:
                    return _TRANSPARENT
        except ValueError:
            return value
        return tuple(min(255, round(c)) for c in channels)
    return value


def _same_colour(text, background) -> bool:
    """Whether text of colour C{text} is invisible on C{background}."""
    if text == _TRANSPARENT:
        return True
    if background is None or text is None:
        return False
    if isinstance(text, tuple) and isinstance(background, tuple):
        return max(abs(a - b) for a, b in zip(text, background)) <= 8
    return text == background


def _px(value: str) -> float | None:
    """A CSS length in pixels (em and rem as 16px, % as itself), or L{None}."""
    match = _LENGTH.match(value.strip())
    if match is None:
        return None
    try:
        number = float(match[1])
    except ValueError:
        return None
    unit = match[2] or "px"
    return number * {"pt": 4 / 3, "em": 16, "rem": 16, "in": 96, "cm": 37.8, "mm": 3.78,
                     "pc": 16}.get(unit, 1)


def _declarations(style: str) -> dict[str, str]:
    """The declarations of a style attribute or rule body, names and values
    lowercased; a later declaration wins unless an earlier one is !important."""
    style = style[:_MAX_STYLE].lower()
    if "/*" in style:
        style = _COMMENT.sub("", style)
    found: dict[str, str] = {}
    important: set[str] = set()
    for declaration in style.split(";"):
        name, colon, value = declaration.partition(":")
        if not colon:
            continue
        name = name.strip()
        value = value.strip()
        if "!" in value:
            value, count = _IMPORTANT.subn("", value)
            if count:
                important.add(name)
            elif name in important:
                continue
        elif name in important:
            continue
        found[name] = value
    return found


def _hides(d: dict[str, str]) -> bool:
    """Whether declarations hide the element and everything in it."""
    if d.get("display") == "none" or d.get("mso-hide") == "all":
        return True
    opacity = d.get("opacity")
    if opacity is not None:
        try:
            value = float(opacity[:-1]) / 100 if opacity.endswith("%") else float(opacity)
        except ValueError:
            value = 1.0
        if value < 0.04:
            return True
    overflow = d.get("overflow") or d.get("overflow-y") or d.get("overflow-x")
    if overflow in ("hidden", "clip"):
        for key in ("max-height", "height", "max-width", "width"):
            if key in d and _px(d[key]) == 0:
                return True
    return _offscreen(d)


def _offscreen(d: dict[str, str]) -> bool:
    """Whether declarations move the element out of sight (-500px or more)."""
    positioned = d.get("position") in ("absolute", "fixed", "relative")
    for key in ("left", "top", "right", "bottom") if positioned else ():
        value = d.get(key)
        if value is not None and value.endswith("%"):
            if (_px(value) or 0) <= -100:
                return True
        elif value is not None and (_px(value) or 0) <= -500:
            return True
    for key in ("margin-left", "margin-top", "text-indent"):
        value = d.get(key)
        if value is not None and (_px(value) or 0) <= -500:
            return True
    margin = d.get("margin")
    return margin is not None and any((_px(v) or 0) <= -500 for v in margin.split()[:4])


def _font_zero(d: dict[str, str]) -> bool | None:
    """Whether the font size makes text invisible (0, or at most 1px or 1pt);
    L{None} when the declarations say nothing about it."""
    value = d.get("font-size")
    if value is None:
        font = d.get("font")
        if font is None:
            return None
        match = _FONT_SIZE.search(font)
        if match is None:
            return None
        value = match[1] + (match[2] or "")
    size = _px(value)
    if size is None:
        return None
    return size <= 4 / 3 if value.endswith(("px", "pt")) else size <= 0


def _background(d: dict[str, str], attrs: dict) -> object:
    """The background an element sets: a colour, L{None} when it sets an image
    (unknown colour), or C{...} when it sets none."""
    for key in ("background-image",):
        if "url(" in d.get(key, ""):
            return None
    value = d.get("background-color")
    if value is None:
        shorthand = d.get("background")
        if shorthand is not None:
            if "url(" in shorthand or "gradient" in shorthand:
                return None
            for token in shorthand.split():
                colour = _colour(token)
                if colour is not None and (isinstance(colour, tuple) or colour == _TRANSPARENT):
                    value = token
                    break
    if value is None:
        if attrs.get("background"):
            return None
        bgcolor = attrs.get("bgcolor")
        if bgcolor:
            value = bgcolor.strip().lower()
    if value is None:
        return ...
    colour = _colour(value)
    if colour is None or colour == _TRANSPARENT:
        return ...
    return colour


_SIMPLE_SELECTOR = re.compile(r"([a-z][a-z0-9]*)?(?:([.#])([\w-]+))?\Z")
_BRACE = re.compile(r"[{}]")


def _top_level_rules(text: str):
    """C{(selectors, body)} of each top-level rule of a stylesheet, skipping
    at-rules and their blocks (C{@media} rules apply only sometimes); linear."""
    depth = 0
    start = 0  # where the current top-level prelude starts
    open_at = -1
    skip = False
    for match in _BRACE.finditer(text):
        if match[0] == "{":
            if depth == 0:
                prelude = text[start : match.start()].rsplit(";", 1)[-1].strip()
                skip = prelude.startswith("@")
                open_at = match.end()
                selectors = prelude
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                if not skip:
                    body = text[open_at : match.start()]
                    if "{" not in body:
                        yield selectors, body
                start = match.end()


@attrs.frozen
class _Sheet:
    """Declarations of the document's simple top-level stylesheet rules (C{tag},
    C{.class}, C{#id}, C{tag.class}, C{tag#id}); rules with other selectors,
    and rules inside @media and other at-blocks, are not read."""

    tags: dict[str, dict[str, str]] = attrs.Factory(dict)
    classes: dict[str, dict[str, str]] = attrs.Factory(dict)
    ids: dict[str, dict[str, str]] = attrs.Factory(dict)

    @classmethod
    def of(cls, root) -> "_Sheet":
        sheet = cls()
        if root is None:
            return sheet
        texts: list[str] = []
        size = 0
        for style in root.css("style"):
            texts.append(style.text(deep=True)[: _MAX_SHEET - size])
            size += len(texts[-1])
            if size >= _MAX_SHEET:
                break
        if not texts:
            return sheet
        text = _COMMENT.sub("", "\n".join(texts).lower())
        for count, (selectors, body) in enumerate(_top_level_rules(text)):
            if count >= _MAX_RULES:
                break
            declarations = None
            for selector in selectors.split(",")[:32]:
                match = _SIMPLE_SELECTOR.match(selector.strip())
                if match is None or not (match[1] or match[3]):
                    continue
                if declarations is None:
                    declarations = _declarations(body)
                tag, kind, name = match[1], match[2], match[3]
                if kind is None:
                    table, key = sheet.tags, tag
                else:
                    table = sheet.classes if kind == "." else sheet.ids
                    key = name if tag is None else f"{tag}{kind}{name}"
                table.setdefault(key, {}).update(declarations)
        return sheet

    def __bool__(self) -> bool:
        return bool(self.tags or self.classes or self.ids)

    def rules(self, tag: str, attrs: dict) -> dict[str, str] | None:
        """The sheet's declarations for an element (tag, then class, then id
        rules, the later winning), or L{None}."""
        found = self.tags.get(tag)
        classes = attrs.get("class")
        if classes and self.classes:
            for name in classes.split()[:16]:
                for key in (name, f"{tag}.{name}"):
                    declarations = self.classes.get(key)
                    if declarations:
                        found = {**found, **declarations} if found else declarations
        ident = attrs.get("id")
        if ident and self.ids:
            for key in (ident, f"{tag}#{ident}"):
                declarations = self.ids.get(key)
                if declarations:
                    found = {**found, **declarations} if found else declarations
        return found


class _Effect:
    """What an element's declarations (style attribute and sheet rules) do,
    worked out once per distinct declaration set."""

    __slots__ = ("hides", "colour", "background", "font_zero", "visibility", "display",
                 "pixel")

    def __init__(self, d: dict[str, str]):
        self.hides = _hides(d)
        value = d.get("color")
        self.colour = None if value is None else _colour(value)
        self.background = _background(d, {})
        self.font_zero = _font_zero(d)
        self.visibility = d.get("visibility")
        self.display = d.get("display")
        self.pixel = _pixel(d.get("width")) or _pixel(d.get("height"))


class _Style:
    """What an element passes down that decides whether text shows."""

    __slots__ = ("colour", "background", "font_zero", "invisible", "hides_text")

    def __init__(self, colour=(0, 0, 0), background=_WHITE, font_zero=False, invisible=False):
        self.colour = colour
        self.background = background
        self.font_zero = font_zero
        self.invisible = invisible  # visibility: hidden (a descendant may undo it)
        self.hides_text = font_zero or invisible or _same_colour(colour, background)


_DEFAULT_STYLE = _Style()


# -- the walk --------------------------------------------------------------------

# Never rendered as text: metadata, scripts, embedded content, SVG (its title,
# desc and style would read as text).
_SKIP = frozenset(
    "head script style template title iframe object embed applet frame frameset "
    "datalist input meta link base canvas video audio map svg".split()
)
_BLOCKS = frozenset(
    "address article aside body center details dialog dir div dl dd dt fieldset figure "
    "figcaption footer form header hgroup html main menu nav p section summary caption "
    "tbody thead tfoot search noscript legend".split()
)
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_EMPHASIS = {"b": "**", "strong": "**", "i": "*", "em": "*", "cite": "*", "s": "~~",
             "strike": "~~", "del": "~~"}
_CODE = frozenset({"code", "tt", "kbd", "samp"})
# What an element is to the walk (L{_Walk.enter}); absent: plain inline.
_VOID_KIND, _BLOCK, _MARK, _CONTAINER = "void", "block", "mark", "container"
_KINDS = {
    **{tag: _BLOCK for tag in _BLOCKS},
    **{tag: _MARK for tag in (*_EMPHASIS, *_CODE, "a")},
    **{tag: _CONTAINER for tag in (*_HEADINGS, "td", "th", "tr", "table", "li", "ul", "ol",
                                   "blockquote", "pre")},
    **{tag: _VOID_KIND for tag in ("img", "br", "hr", "wbr")},
}
_NOTHING = ("nothing",)  # an element that changes nothing: nothing to undo
_DISPLAY_BLOCKS = frozenset({"block", "flex", "grid", "table", "list-item", "table-row"})
_SPACE = re.compile(r"[ \t\n\r\f\xa0]+")
_UNSAFE_SCHEMES = ("javascript:", "vbscript:", "data:", "file:")
_URL_ESCAPES = str.maketrans({" ": "%20", "(": "%28", ")": "%29", "<": "%3C", ">": "%3E",
                              "\n": "", "\r": "", "\t": ""})
_BRACKETS = re.compile(r"([\[\]])")
_BACKTICKS = re.compile(r"`+")
_BREAK = "  \n"  # a hard line break
_UNDERLINE = re.compile(r"\n([-=]+ *(?:\n|\Z))")
_LANGUAGE = re.compile(r"(?:^|\s)(?:language|lang)-([\w+#.-]{1,32})")


#: Ids of the element that starts the history in Outlook's replies and forwards:
#: the header (Outlook on the web and mobile), or the container of header and
#: history (the new Outlook).
_HISTORY_IDS = frozenset({"divRplyFwdMsg", "mail-editor-reference-message-container"})
# Outlook for Windows and Mac: a header div with a top border and this padding.
_OUTLOOK_PADDING = re.compile(r"3(?:\.0+)?pt 0(?:in|cm)\b")
_MAX_HEADER_NODES = 64


def _opens_history(node, attrs: dict) -> bool:
    """Whether a div is the header Outlook writes above the quoted history: its id
    (L{_HISTORY_IDS}), or Outlook's top-bordered header style over at least two
    label texts ("From:", "Sent:", in any language) among its first nodes."""
    if attrs.get("id") in _HISTORY_IDS:
        return True
    style = attrs.get("style")
    if not style or "pt 0" not in style or "solid" not in style.lower():
        return False
    declarations = _declarations(style)
    if not _OUTLOOK_PADDING.match(declarations.get("padding", "")):
        return False
    if "solid" not in declarations.get("border-top", "") and not declarations.get(
            "border-style", "").startswith("solid none"):
        return False
    labels = 0
    for count, child in enumerate(node.traverse(include_text=True)):
        if count >= _MAX_HEADER_NODES:
            break
        if child.tag == "-text":
            text = (child.text_content or "").strip()
            if 0 < len(text) <= 30 and text[-1] in ":：":
                labels += 1
                if labels == 2:
                    return True
    return False


class _Frame:
    """A container with its own blocks: the document, a list, a list item, a
    quote, a table, a table cell or a pre."""

    __slots__ = ("kind", "blocks", "inline", "marks", "heading", "space", "items",
                 "ordered", "start", "rows", "header", "span", "layout", "code", "info")

    def __init__(self, kind: str):
        self.kind = kind
        self.blocks: list[tuple[str, bool]] = []  # (text, is a list)
        self.inline: list[str] = []
        self.marks: list[list] = []  # [mark, start index in inline, url]
        self.heading = 0
        self.space = True  # the inline text ends in a space (or is empty)
        self.code = 0  # open inline code elements
        self.items: list[str] = []
        self.ordered = False
        self.start = 1  # an ordered list's first number
        self.rows: list[list[tuple[_Frame, bool, int]]] = []  # (cell, is header, colspan)
        self.header = False
        self.span = 1
        self.layout = False
        self.info = ""


class _Walk:
    """One pass over the tree, in document order, with an explicit stack."""

    def __init__(self, sheet: _Sheet):
        self.sheet = sheet
        self.has_sheet = bool(sheet)
        self.frames = [_Frame("root")]
        self.hidden = 0
        self.hidden_depth = 0  # inside an element hidden with all it holds
        self.style = _DEFAULT_STYLE
        self.effects: dict = {}
        self.styles: dict[tuple, _Style] = {}
        self.lists = 0
        self.quotes = 0
        self.history = False  # a quote opened for Outlook's history (L{_opens_history})

    # ---- tree traversal

    def run(self, root) -> None:
        stack: list[tuple] = []
        node = root
        while node is not None:
            tag = node.tag
            if tag == "-text":
                self.text(node.text_content)
            elif tag[0] != "-" and tag not in _SKIP:
                undo = self.enter(node, tag)
                child = node.child if undo is not False else None
                if child is not None:
                    stack.append((node, undo))
                    node = child
                    continue
                if undo is not False:
                    self.leave(undo)
            # Next: the sibling, else the next sibling of the nearest open ancestor.
            while True:
                following = node.next
                if following is not None or not stack:
                    node = following if stack else None
                    break
                node, undo = stack.pop()
                self.leave(undo)

    def enter(self, node, tag: str):
        """Open an element; returns what L{leave} undoes, or C{False} to skip it."""
        attrs = node.attributes
        style = self.style
        effect = self._effect(tag, attrs)
        if self.hidden_depth:
            # Nothing below undoes display:none and the like (visibility can, and it
            # is a text-level rule: L{_Style.invisible}).
            self.hidden_depth += 1
            return ("hidden", style)
        if effect is not None and effect.hides or "hidden" in attrs and (
                effect is None or effect.display in (None, "none")):
            self.hidden_depth = 1
            return ("hidden", style)
        if effect is not None or "bgcolor" in attrs or "background" in attrs or (
                tag == "font" and "color" in attrs) or (tag == "a" and attrs.get("href")):
            style = self._style(tag, attrs, effect, style)
        if tag == "div" and not self.history and len(self.frames) == 1 and not (
                self.frames[0].marks) and _opens_history(node, attrs):
            # Outlook writes the quoted history unquoted below this header: from
            # here to the end of the document the walk writes a quote (closed by
            # markdown()), so the body shows it as history (aimx.core.replytext).
            self.history = True
            self.quotes += 1
            self._push("quote")
        kind = _KINDS.get(tag)
        if kind is None:  # an inline element without Markdown of its own
            if effect is not None and effect.display in _DISPLAY_BLOCKS:
                kind = _BLOCK
            elif style is self.style:
                return _NOTHING
            else:
                previous, self.style = self.style, style
                return ("style", previous)
        if kind is _VOID_KIND:
            if tag == "img":
                self._image(attrs, effect, style)
            elif tag == "br":
                if not style.hides_text:
                    self._break()
            elif tag == "hr":
                self._flush()
                self.frames[-1].blocks.append(("---", False))
            return False
        previous, self.style = self.style, style
        frame = self.frames[-1]
        if frame.kind == "pre":
            return ("style", previous)  # its text as it is, no Markdown inside
        if kind is _BLOCK:
            self._flush()
            return ("block", previous)
        if kind is _MARK:
            if tag == "a":
                return ("mark", previous, self._open_mark("link", (attrs.get("href") or "").strip()))
            return ("mark", previous, self._open_mark(_EMPHASIS.get(tag, "code"), ""))
        if tag in _HEADINGS:
            self._flush()
            frame.heading = _HEADINGS[tag]
            return ("heading", previous)
        room = len(self.frames) < _MAX_FRAMES
        if tag == "td" or tag == "th":
            if frame.kind == "table" and room:
                cell = self._push("cell")
                cell.header = tag == "th"
                cell.span = max(1, min(_start(attrs.get("colspan")), _MAX_COLSPAN))
                return ("cell", previous)
        elif tag == "tr":
            if frame.kind == "table":
                frame.rows.append([])
                return ("style", previous)
        elif tag == "table":
            if room:
                table = self._push("table")
                table.layout = (attrs.get("role") or "").lower() in ("presentation", "none")
                return ("table", previous)
        elif tag == "li":
            if frame.kind == "list" and room:
                self._push("item")
                return ("item", previous)
        elif tag == "ul" or tag == "ol":
            if self.lists < _MAX_LIST_DEPTH and room:
                self.lists += 1
                lst = self._push("list")
                lst.ordered = tag == "ol"
                if lst.ordered:
                    lst.start = _start(attrs.get("start"))
                return ("list", previous)
        elif tag == "blockquote":
            if self.quotes < _MAX_QUOTE_DEPTH and room:
                self.quotes += 1
                self._push("quote")
                return ("quote", previous)
        elif tag == "pre":
            if room:
                pre = self._push("pre")
                code = node.child
                if code is not None and code.tag == "code" and code.next is None:
                    match = _LANGUAGE.search(code.attributes.get("class") or "")
                    pre.info = match[1] if match else ""
                return ("pre", previous)
        # A container past its nesting cap, or out of place: a plain block.
        self._flush()
        return ("block", previous)

    def leave(self, undo) -> None:
        if undo is _NOTHING:
            return
        kind, previous = undo[0], undo[1]
        self.style = previous
        if kind == "hidden":
            self.hidden_depth -= 1
        elif kind == "style":
            pass
        elif kind == "mark":
            self._close_mark(undo[2])
        elif kind == "block":
            self._flush()
        elif kind == "heading":
            self._flush()
            self.frames[-1].heading = 0
        else:
            self._pop(kind)

    # ---- styles

    def _effect(self, tag: str, attrs: dict) -> _Effect | None:
        """The element's declarations' effect (inline style over sheet rules)."""
        style = attrs.get("style")
        if self.has_sheet:
            key = (tag, attrs.get("class"), attrs.get("id"), style)
        elif style:
            key = style
        else:
            return None
        try:
            return self.effects[key]
        except KeyError:
            pass
        declarations = _declarations(style) if style else None
        if self.has_sheet:
            sheet = self.sheet.rules(tag, attrs)
            if sheet:
                declarations = {**sheet, **declarations} if declarations else sheet
        effect = None if declarations is None else _Effect(declarations)
        if len(self.effects) < 4096:
            self.effects[key] = effect
        return effect

    def _style(self, tag: str, attrs: dict, effect: _Effect | None, style: _Style) -> _Style:
        colour = style.colour
        if tag == "a" and attrs.get("href"):
            colour = _LINK_BLUE
        background = ...
        font_zero = None
        invisible = style.invisible
        if effect is not None:
            if effect.colour is not None:
                colour = effect.colour
            background = effect.background
            font_zero = effect.font_zero
            if effect.visibility is not None:
                invisible = effect.visibility in ("hidden", "collapse")
        if tag == "font" and (effect is None or effect.colour is None):
            value = _colour((attrs.get("color") or "").lower())
            if value is not None:
                colour = value
        if background is ... and ("bgcolor" in attrs or "background" in attrs):
            background = _background({}, attrs)
        if background is ...:
            background = style.background
        if font_zero is None:
            font_zero = style.font_zero
        key = (colour, background, font_zero, invisible)
        if key == (style.colour, style.background, style.font_zero, style.invisible):
            return style
        found = self.styles.get(key)
        if found is None:
            found = self.styles[key] = _Style(*key)
        return found

    # ---- inline content

    def text(self, data: str) -> None:
        if not data:
            return
        if self.hidden_depth or self.style.hides_text:
            self.hidden += _visible_length(data)
            return
        if not data.isascii():
            data, removed = _INVISIBLE.subn("", data)
            self.hidden += removed
        frame = self.frames[-1]
        if frame.kind == "pre":
            frame.inline.append(data)
            return
        if "\n" in data or "  " in data or "\t" in data or "\xa0" in data or "\r" in data \
                or "\f" in data:
            data = _SPACE.sub(" ", data)
        if frame.space and data[:1] == " ":
            data = data[1:]
        if data:
            frame.inline.append(data)
            frame.space = data[-1] == " "

    def _break(self) -> None:
        frame = self.frames[-1]
        if frame.kind == "pre":
            frame.inline.append("\n")
        elif frame.inline and frame.inline[-1] == _BREAK:
            frame.inline.pop()
            self._flush()  # two breaks in a row: a new paragraph
        elif frame.inline:
            last = frame.inline[-1]
            if last[-1:] == " ":
                frame.inline[-1] = last.rstrip(" ")
            frame.inline.append(_BREAK)
            frame.space = True

    def _image(self, attrs: dict, effect: _Effect | None, style: _Style) -> None:
        if style.hides_text:
            return
        if _pixel(attrs.get("width")) or _pixel(attrs.get("height")) or (
                effect is not None and effect.pixel):
            return  # a tracking pixel
        alt = (attrs.get("alt") or "").strip()
        if alt:
            frame = self.frames[-1]
            if not frame.space and frame.kind != "pre":
                frame.inline.append(" ")
            self.text(alt)
            if frame.kind != "pre":
                self.text(" ")

    def _open_mark(self, mark: str, url: str):
        frame = self.frames[-1]
        if len(frame.marks) >= _MAX_MARKS or frame.code or any(
                m[0] == mark for m in frame.marks):
            return None
        entry = [mark, len(frame.inline), url]
        frame.marks.append(entry)
        if mark == "code":
            frame.code += 1
        return entry

    def _close_mark(self, entry) -> None:
        if entry is None:
            return
        frame = self.frames[-1]
        # The mark is open in this frame, normally on top; the tree is well formed.
        for i in range(len(frame.marks) - 1, -1, -1):
            if frame.marks[i] is entry:
                for inner in reversed(frame.marks[i:]):
                    _wrap(frame, inner)
                del frame.marks[i]
                for inner in frame.marks[i:]:
                    inner[1] = len(frame.inline)
                break
        if entry[0] == "code":
            frame.code = max(frame.code - 1, 0)

    # ---- blocks

    def _flush(self) -> None:
        """End the current paragraph: close and reopen the open marks around it."""
        frame = self.frames[-1]
        if frame.kind == "pre":
            return
        if frame.inline:
            for entry in reversed(frame.marks):
                _wrap(frame, entry)
            text = "".join(frame.inline).strip(" \n")
            frame.inline = []
            if text:
                if frame.heading:
                    text = "#" * frame.heading + " " + text.replace(_BREAK, " ")
                elif "\n-" in text or "\n=" in text:
                    # A line of only - or = would make the line above a heading.
                    text = _UNDERLINE.sub(r"\n\\\1", text)
                frame.blocks.append((text, False))
        for entry in frame.marks:
            entry[1] = 0
        frame.space = True

    def _push(self, kind: str) -> _Frame:
        self._flush()
        parent = self.frames[-1]
        frame = _Frame(kind)
        # Emphasis and links open around a container carry on inside it.
        frame.marks = [[m[0], 0, m[2]] for m in parent.marks if m[0] != "code"]
        self.frames.append(frame)
        return frame

    def _pop(self, kind: str) -> None:
        frame = self.frames.pop()
        if kind == "pre":
            self._emit_pre(frame)
            return
        self.frames.append(frame)
        self._flush()
        self.frames.pop()
        parent = self.frames[-1]
        if kind == "list":
            self.lists -= 1
            parent.blocks.extend(frame.blocks)  # text directly in the list
            if frame.items:
                loose = any("\n\n" in item for item in frame.items)
                parent.blocks.append(("\n\n".join(frame.items) if loose
                                      else "\n".join(frame.items), True))
        elif kind == "item":
            text = _join_blocks(frame.blocks, item=True)
            if text:
                number = parent.start + len(parent.items)
                marker = f"{number}. " if parent.ordered else "- "
                pad = " " * len(marker)
                first, *rest = text.split("\n")
                parent.items.append(
                    marker + first + "".join("\n" + pad + line if line else "\n" for line in rest)
                )
        elif kind == "quote":
            self.quotes -= 1
            text = _join_blocks(frame.blocks)
            if text:
                quoted = "\n".join("> " + line if line else ">" for line in text.split("\n"))
                parent.blocks.append((quoted, False))
        elif kind == "cell":
            table = parent
            if not table.rows:
                table.rows.append([])
            table.rows[-1].append((frame, frame.header, frame.span))
        elif kind == "table":
            self._emit_table(frame, parent)

    def _emit_pre(self, frame: _Frame) -> None:
        parent = self.frames[-1]
        text = "".join(frame.inline).strip("\n")
        if not text.strip():
            return
        runs = _BACKTICKS.findall(text)
        fence = "`" * max(3, max(map(len, runs), default=0) + 1)
        parent.blocks.append((f"{fence}{frame.info}\n{text}\n{fence}", False))

    def _emit_table(self, table: _Frame, parent: _Frame) -> None:
        rows = [row for row in table.rows if row]
        data = (
            not table.layout
            and len(rows) >= 2
            and max(len(row) for row in rows) >= 2
            and all(len(cell.blocks) <= 1 and not any(
                        b[1] or b[0][0] == "#" or "\n" in b[0].replace(_BREAK, " ")
                        for b in cell.blocks)
                    for row in rows for cell, _, _ in row)
        )
        parent.blocks.extend(table.blocks)  # a caption, text beside the rows
        if not data:
            for row in rows:
                for cell, _, _ in row:
                    parent.blocks.extend(cell.blocks)
            return
        lines = []
        width = min(max(sum(span for _, _, span in row) for row in rows), _MAX_COLUMNS)
        for n, row in enumerate(rows):
            cells: list[str] = []
            for cell, _, span in row:
                text = cell.blocks[0][0] if cell.blocks else ""
                cells.append(text.replace(_BREAK, " ").replace("|", "\\|"))
                cells.extend([""] * (span - 1))
            cells = cells[:_MAX_COLUMNS]
            if n == 0:
                cells += [""] * (width - len(cells))
            lines.append("| " + " | ".join(cells) + " |")
            if n == 0:
                lines.append("| " + " | ".join(["---"] * width) + " |")
        parent.blocks.append(("\n".join(lines), False))

    def markdown(self) -> str:
        while len(self.frames) > 1:
            self._pop(self.frames[-1].kind)
        self._flush()
        text = _join_blocks(self.frames[0].blocks)
        return text + "\n" if text else ""


def _start(value) -> int:
    if value is None:
        return 1
    try:
        return min(max(int(str(value).strip()), 0), 10**9)
    except (TypeError, ValueError):
        return 1


def _pixel(value) -> bool:
    """Whether a width or height makes an image a tracking pixel (0 or 1)."""
    if not value:
        return False
    value = str(value).strip().lower()
    return value in ("0", "1", "0px", "1px")


def _join_blocks(blocks: list[tuple[str, bool]], item: bool = False) -> str:
    """Blocks one blank line apart; in a list item, a list right after a
    paragraph follows it on the next line (a tight nested list)."""
    out: list[str] = []
    previous_list = True
    for text, is_list in blocks:
        if out:
            out.append("\n" if item and is_list and not previous_list else "\n\n")
        out.append(text)
        previous_list = is_list
    return "".join(out)


def _wrap(frame: _Frame, entry: list) -> None:
    """Put one mark around the inline text since it opened."""
    mark, start, url = entry
    inner = "".join(frame.inline[start:])
    del frame.inline[start:]
    core = inner.strip(" \n")
    if not core:
        if inner:
            frame.inline.append(inner)
        return
    lead = inner[: len(inner) - len(inner.lstrip(" \n"))]
    trail = inner[len(inner.rstrip(" \n")):]
    if mark == "link":
        if not url or url.startswith("#") or url.lower().startswith(_UNSAFE_SCHEMES) or \
                url == core or url == "mailto:" + core:
            wrapped = core
        else:
            text = _BRACKETS.sub(r"\\\1", core)
            wrapped = f"[{text}]({url.translate(_URL_ESCAPES)})"
    elif mark == "code":
        core = core.replace(_BREAK, " ")
        fence = "`" * (max(map(len, _BACKTICKS.findall(core)), default=0) + 1)
        pad = " " if core[0] == "`" or core[-1] == "`" else ""
        wrapped = f"{fence}{pad}{core}{pad}{fence}"
    else:
        wrapped = f"{mark}{core}{mark}"
    frame.inline.append(lead + wrapped + trail)
