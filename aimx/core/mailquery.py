"""Mail search and listing rules (L0, pure): the query language, date bounds, snippets.

The search query of C{email_search} and C{aimx mail search} is read here into
terms, and only from those terms is the SQLite FTS5 C{MATCH} expression built
(L{match_expression}): every term is written as an FTS5 string, so nothing a
caller types (C{OR}, C{NEAR(}, C{col:}, C{^}, an unbalanced quote) is ever FTS5
syntax.  The language:

 - words separated by white space, all of which must match (AND);
 - C{word*}: any word starting with C{word};
 - C{"two words"}: the words next to each other, in that order (an unclosed
   quote runs to the end of the query).

A term is tokenised by FTS5 itself (C{unicode61}: letters and digits, case and
diacritics folded), so C{don't} is the phrase C{don t}, as in the text; a
term with no letter or digit matches nothing and is dropped.

C{since}/C{until} are RFC 3339 dates or date-times (L{parse_bound}); a date
alone covers that whole UTC day.
"""

import datetime
import re

import attrs

#: The most terms one query may hold (bound the MATCH expression).
MAX_TERMS = 32
#: The longest query read, in characters.
MAX_QUERY = 1000
#: Characters of context a snippet shows.
SNIPPET_WIDTH = 160

_UTC = datetime.timezone.utc
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=_UTC)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Control characters end an FTS5 string early (NUL) or mean nothing: white space here.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class QueryError(ValueError):
    """A search argument that cannot be read; the text names the argument."""


@attrs.frozen
class Term:
    """One search term.

    @ivar text: the words as typed (without quotes or the trailing C{*}).
    @ivar prefix: the last word matches any word it starts.
    @ivar phrase: written in quotes (several words in order).
    """

    text: str
    prefix: bool = False
    phrase: bool = False


def _searchable(text: str) -> bool:
    return any(c.isalnum() for c in text)


def parse_query(query: str) -> list[Term]:
    """The terms of a search query (see the module docstring).

    @raise QueryError: the query is longer than L{MAX_QUERY} characters or holds
        more than L{MAX_TERMS} terms.
    """
    if len(query) > MAX_QUERY:
        raise QueryError(f"query is longer than {MAX_QUERY} characters")
    query = _CONTROL.sub(" ", query)
    terms: list[Term] = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c.isspace():
            i += 1
            continue
        if c == '"':
            end = query.find('"', i + 1)
            end = n if end < 0 else end
            text = query[i + 1 : end]
            i = end + 1
            prefix = text.rstrip().endswith("*")
            text = text.strip().rstrip("*").strip()
            if _searchable(text):
                terms.append(Term(text, prefix=prefix, phrase=True))
            continue
        j = i
        while j < n and not query[j].isspace() and query[j] != '"':
            j += 1
        word = query[i:j]
        i = j
        prefix = word.endswith("*")
        word = word.rstrip("*")
        if _searchable(word):
            terms.append(Term(word, prefix=prefix))
    if len(terms) > MAX_TERMS:
        raise QueryError(f"query has more than {MAX_TERMS} terms")
    return terms


def match_expression(terms: list[Term]) -> str:
    """The FTS5 C{MATCH} expression of L{parse_query}'s terms: every term an FTS5
    string (C{"} doubled inside), prefix terms followed by C{*}, joined by C{AND}.

    @return: C{""} when there are no terms.
    """
    parts = []
    for term in terms:
        part = '"' + term.text.replace('"', '""') + '"'
        parts.append(part + "*" if term.prefix else part)
    return " AND ".join(parts)


def _to_us(when: datetime.datetime) -> int:
    delta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def timestamp_us(text) -> int | None:
    """Microseconds since the epoch of an RFC 3339 date-time (a frontmatter C{date}).

    @return: C{None} when C{text} is not a date-time with a time zone.
    """
    if not isinstance(text, str):
        return None
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return _to_us(when)


def parse_bound(name: str, text: str, end: bool) -> int:
    """A C{since}/C{until} argument as microseconds since the epoch.

    A date (C{2025-06-01}) is that UTC day: its start for C{since}, the start
    of the next day for C{until}.  A date-time (C{2025-06-01T10:00:00Z},
    C{+02:00} offsets; without an offset, UTC) is that instant.

    @param name: the argument's name, for the error text.
    @param end: an upper bound (C{until}): the result is I{exclusive}.
    @raise QueryError: not an RFC 3339 date or date-time.
    """
    text = text.strip()
    problem = QueryError(
        f"{name}: '{text}' is not an RFC 3339 date (2025-06-01) or date-time "
        "(2025-06-01T10:00:00Z)"
    )
    if _DATE.fullmatch(text):
        try:
            day = datetime.date.fromisoformat(text)
        except ValueError:
            raise problem from None
        start = datetime.datetime(day.year, day.month, day.day, tzinfo=_UTC)
        return _to_us(start + datetime.timedelta(days=1) if end else start)
    if len(text) < 11 or text[10] not in "Tt ":
        raise problem
    try:
        when = datetime.datetime.fromisoformat(text[:10] + "T" + text[11:].replace("z", "Z"))
    except ValueError:
        raise problem from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_UTC)
    return _to_us(when) + (1 if end else 0)


def snippet(body: str, terms: list[Term], width: int = SNIPPET_WIDTH) -> str:
    """A short piece of C{body} around the first place a term's first word occurs.

    White space is collapsed; a cut end is marked with C{…}.  Without a term in
    the body (it matched the subject or an address), the body's beginning.
    """
    first = None
    for term in terms:
        words = re.findall(r"\w+", term.text)
        if not words:
            continue
        found = re.search(r"(?<!\w)" + re.escape(words[0]), body, re.IGNORECASE)
        if found and (first is None or found.start() < first):
            first = found.start()
    start = 0 if first is None else max(0, first - width // 3)
    # Collapse white space in a window a little wider than the result.
    piece = " ".join(body[start : start + width * 3].split())
    if start > 0:
        # Do not start inside a word.
        cut = piece.find(" ")
        piece = piece[cut + 1 :] if 0 <= cut < width // 3 else piece
    text = piece[:width]
    if len(piece) > width:
        space = text.rfind(" ")
        text = (text[:space] if space > width // 2 else text).rstrip() + "…"
    if start > 0 and text:
        text = "…" + text
    return text
