"""File naming for stored mail: slugs, stems, attachment names, id checks (L0, pure).

Attachment names, stems and ids (docs/concepts.md, "Message files").
Nothing here touches the disk: existence is asked through a callable.
"""

import itertools
import re
import unicodedata
from collections.abc import Callable, Iterator, Set
from datetime import datetime, timezone

_SLUG_MAX = 20

# Path separators, NUL, every Unicode Cc (C0, DEL, C1), zero-width and
# bidirectional controls, BOM; and lone surrogates,
# which neither UTF-8 (the frontmatter) nor os.fsencode can write.
_UNSAFE_RUN = re.compile(
    "[/\\\\\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff"
    "\ud800-\udfff]+"
)
_EDGE_JUNK = re.compile(r"^[\s._-]+|[\s._-]+$")
_NAME_MAX_BYTES = 200


def slugify(subject: str) -> str:
    """The filename slug of a subject.

    Lowercased words of Unicode letters and digits, with the combining marks
    that follow them, joined by C{-} and cut to 20 code points without
    separating a base character from its marks; C{no-subject} when nothing is
    left.  (AIMX splits words at marks; aimx keeps them, on purpose.)

    @param subject: the decoded subject.
    @return: the slug.
    """
    text = unicodedata.normalize("NFC", subject).lower()
    out: list[str] = []
    in_word = False
    for ch in text:
        # A word starts at an isalnum() character; a combining mark continues
        # the word it follows (a virama or vowel sign does not split an Indic
        # word) and starts none.
        if ch.isalnum() or in_word and unicodedata.category(ch)[0] == "M":
            out.append(ch)
            in_word = True
        elif in_word:
            out.append("-")
            in_word = False
    slug = "".join(out).strip("-")
    if len(slug) > _SLUG_MAX:
        cut = _SLUG_MAX
        while cut and unicodedata.category(slug[cut])[0] == "M":
            cut -= 1  # back to the base character, which goes too
        slug = slug[:cut]
    return slug.rstrip("-") or "no-subject"


def base_stem(timestamp: datetime, subject: str) -> str:
    """The first stem candidate, C{YYYY-MM-DD-HHMMSS-<slug>}, in UTC.

    @param timestamp: ingest time; a naive value is taken as UTC.
    @param subject: the decoded subject.
    @return: the base stem.
    """
    if timestamp.tzinfo is not None:
        timestamp = timestamp.astimezone(timezone.utc)
    return timestamp.strftime("%Y-%m-%d-%H%M%S-") + slugify(subject)


def stem_candidates(base: str) -> Iterator[str]:
    """Yield C{base}, C{base-2}, C{base-3}, ... without end.

    @param base: the base stem from L{base_stem}.
    """
    yield base
    for n in itertools.count(2):
        yield f"{base}-{n}"


def pick_stem(base: str, exists: Callable[[str], bool], *, bundle: bool) -> str:
    """The first free stem for a new message in a mailbox directory.

    A flat message needs neither C{<stem>.md} nor C{<stem>} to exist; a
    bundle (message with attachments) only needs C{<stem>} to be free.

    @param base: the base stem from L{base_stem}.
    @param exists: tells whether a directory entry of that name exists
        (e.g. C{names.__contains__} or a C{lexists} on the mailbox dir).
    @param bundle: whether the message is stored as a bundle directory.
    @return: the chosen stem, which is the message id.
    """
    return next(
        stem
        for stem in stem_candidates(base)
        if not exists(stem) and (bundle or not exists(stem + ".md"))
    )


def _trim(name: str) -> str:
    return _EDGE_JUNK.sub("", name)


def sanitize_attachment_name(raw: str, index: int) -> str:
    """A safe file name for an attachment.

    @param raw: the name the sender gave, already MIME-decoded; may be hostile.
    @param index: the attachment's position in MIME order, for the fallback
        name C{attachment-<index>}.
    @return: a non-empty name without path separators or control
        characters, not starting with C{.}, at most 200 UTF-8 bytes.
    """
    name = raw.rsplit("/", 1)[-1]
    if name in (".", ".."):
        name = ""
    name = _UNSAFE_RUN.sub("_", unicodedata.normalize("NFC", name))
    name = _trim(name)
    encoded = name.encode("utf-8", "surrogatepass")
    if len(encoded) > _NAME_MAX_BYTES:
        name = _trim(encoded[:_NAME_MAX_BYTES].decode("utf-8", "ignore"))
    return name or f"attachment-{index}"


def dedupe_attachment_name(
    name: str, taken: Set[str], tried: dict[str, int] | None = None
) -> str:
    """C{name}, or the first free C{<stem>-N<.ext>} (N from 1) if it is taken.

    The stem/extension split is at the last C{.}: C{a.tar.gz} becomes
    C{a.tar-1.gz}, C{README} becomes C{README-1}.  C{taken} is not changed;
    the caller adds the result (and C{<stem>.md} of the message beforehand).

    @param name: a sanitised attachment name.
    @param taken: names already used in the bundle directory.
    @param tried: per name, the next N to try; pass one dict for a whole bundle
        so thousands of same-named parts cost linear, not quadratic, time.
    @return: a name not in C{taken}.
    """
    if name not in taken:
        return name
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    tried = {} if tried is None else tried
    for n in itertools.count(tried.get(name, 1)):
        candidate = f"{stem}-{n}{dot}{ext}"
        if candidate not in taken:
            tried[name] = n + 1
            return candidate
    raise AssertionError("unreachable: the counter is endless")


def is_valid_id(message_id: str) -> bool:
    """Whether a message id may be used to build a path (docs/security.md).

    @param message_id: an id (file stem) from a caller.
    @return: C{False} for an empty id or one containing C{..}, C{/}, C{\\}
        or NUL.
    """
    return bool(message_id) and not any(
        bad in message_id for bad in ("..", "/", "\\", "\x00")
    )
