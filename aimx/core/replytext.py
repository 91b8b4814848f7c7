"""The new text of a message: its body without quoted history and signature (L0, pure).

L{new_text} reads a body as aimx stores it (a text/plain part as sent, or an
HTML part as L{aimx.core.htmltext} renders it) and returns what the sender
wrote in this message, so that a thread costs an agent each turn once.  It is
a function of the stored body alone, so an index rebuilt from the files gets
the same text as the one written at delivery.

Quoted history is what follows the sender's last new line:

 1. everything from the first I{history header}: a separator line
    (C{-----Original Message-----} and its translations), an Outlook header
    block (a From line followed by two of Sent/Date, To and Subject, in any of
    the languages of L{_LABELS}, bold or not, with C{:} or C{：}), or an
    attribution line (L{_VERB}: "On ... wrote:", "Am ... schrieb ...:", "Le ...
    a écrit :", "El ... escribió:", "Em ... escreveu:", "Op ... schreef ...:",
    "Il ... ha scritto:", "...のメール:", "... さんは書きました:", "...写道：")
    with a date and an address or opener over history that is not quoted
    (Yahoo, some mobile clients).  A header block right after a "Forwarded
    message" line is the forwarded message, new to this thread, and is kept;
 2. above that, the trailing quote block (C{>} lines the sender wrote nothing
    after) with the attribution line right above it: a line ending in C{:}
    that has a date, an address or an attribution verb, over at most two
    lines (Gmail wraps long ones).  This also covers the languages without a
    pattern of their own;
 3. when the rest has exactly one quote block, that block and its
    attribution: a reply written below the quote (Thunderbird's default), or
    one quoted point answered.  Two or more quote blocks are an interleaved
    reply, and each stays as the context of the answer after it.

The sender's signature is the part from the first line that is C{--} (RFC
3676 §4.3's C{"-- "}, its trailing space often stripped; C{\\--} as the HTML
conversion escapes it) to the history; a line that merely contains C{--} is
text.  Mobile taglines ("Sent from my iPhone" and their translations, "Get
Outlook for iOS") and separator lines left at the end are dropped too.  Lines
inside fenced code blocks are never quotes nor markers.  A message that is not
a reply (C{reply=False}: no In-Reply-To nor References) has its whole body as
its new text.

HTML quote containers: Gmail's C{gmail_quote} is a C{<blockquote>} under its
attribution, so its Markdown is rule 2's shape in any language; Outlook writes
the history unquoted below a header C{<div>} (C{divRplyFwdMsg}, the
C{border-top} header of Outlook for Windows and Mac), which
L{aimx.core.htmltext} renders, with everything after it, as a Markdown quote.

Bounds (docs/design.md, "Bound everything an outsider controls"): the work is linear
in the body; only lines of at most L{MAX_LINE} characters can be markers; of a
body longer than L{MAX_SCAN} characters only the first L{MAX_SCAN} are read: it
is cut at a history header found there (rule 1) or, when the reading stops
inside a quote block, as though the body ended there (rules 2 and 3); else it is
its whole body.  L{new_text} never raises.
"""

import re

#: Characters of a body read (the module docstring says what a longer body's
#: new text is).
MAX_SCAN = 128 * 1024
#: Lines longer than this are text, never markers.
MAX_LINE = 1000

# Line kinds.
_BLANK, _TEXT, _QUOTE, _CODE = "b", "t", "q", "c"

# Attribution lines end in a colon; one of these verbs, a date or an address
# makes a line ending in a colon one.
_VERB = re.compile(
    r"\bwrote\b|\bschrieb\b|\ba\s+écrit\b|\bescribió\b|\bescreveu\b|\bschreef\b"
    r"|\bgeschreven\b|\bha\s+scritto\b|\bskrev\b|\bnapisał|\bнаписал"
    r"|のメール|のメッセージ|書きました|写道|寫道",
    re.IGNORECASE,
)
_OPENER = re.compile(r"(?:On|Am|Le|El|Em|Op|Il|Den|W dniu|Dnia|在)\s")
_DIGIT = re.compile(r"\d")
_COLONS = (":", "：")

_SEPARATOR = re.compile(
    r"\s*-{2,}\s*(?:original\s+message|ursprüngliche\s+nachricht|message\s+d['’]origine"
    r"|mensaje\s+original|mensagem\s+original|oorspronkelijk\s+bericht|messaggio\s+originale"
    r"|元のメッセージ|原始邮件|原始郵件|原始讯息|原始訊息)\s*-{2,}\s*",
    re.IGNORECASE,
)
_FORWARD = re.compile(
    r"[^:：]{0,60}?(?:forward|weitergeleitet|transf[ée]r[ée]|r[ée]exp[ée]di[ée]|reenviado"
    r"|encaminhad|reencaminhad|doorgestuurd|inoltrat|転送|转发|轉寄|轉發|przekazan"
    r"|пересыла)[^:：]{0,60}",
    re.IGNORECASE,
)
_RULE = re.compile(r"\s*([-_*=~])(?:\s*\1){2,}\s*")

# Outlook's header block labels, per field, in the languages of the table (and a
# few more): "From:", "**Von:**", "De :", "差出人:", "发件人：".
_LABELS = {
    "from": "From|Von|De|Van|Da|Od|От|Från|Fra|差出人|发件人|寄件者|寄件人|보낸 사람",
    "date": "Sent|Date|Gesendet|Datum|Envoyé|Enviado el|Enviada em|Enviado em|Enviado|Fecha"
            "|Data|Verzonden|Inviato|Wysłano|Отправлено|Skickat|Sendt|送信日時|日付|发送时间"
            "|日期|时间|寄件日期|傳送時間|보낸 날짜",
    "to": "To|An|À|A|Para|Aan|Do|Кому|Till|Til|宛先|收件人|收件者|받는 사람",
    "subject": "Subject|Betreff|Objet|Asunto|Assunto|Onderwerp|Oggetto|Temat|Тема|Ämne|Emne"
               "|件名|主题|主旨|제목",
    "cc": "Cc|Kopie|Copie|Copia|Kopia|抄送|副本|참조",
}
_LABEL = re.compile(
    r"[ \t]*(?:\*\*|__)?[ \t]*(?:"
    + "|".join(f"(?P<{field}>{names})" for field, names in _LABELS.items())
    + r")[ \t\u00a0\u202f]?[:：]",
    re.IGNORECASE,
)
_HEADER_LOOKAHEAD = 8  # lines after a From line searched for the other fields

# Mobile and webmail taglines, matched on the whole (last) line.
_TAGLINE = re.compile(
    r"(?:sent from my .{1,60}|sent from (?:outlook|mail|yahoo mail|gmail|proton mail)"
    r"(?: for \S+)?|sent with proton mail.{0,40}|get outlook for \S+"
    r"|von meinem .{1,40} gesendet|gesendet von meinem .{1,40}|von outlook für \S+ gesendet"
    r"|outlook für \S+ beziehen"
    r"|envoyé de mon .{1,40}|envoyé depuis mon .{1,40}|télécharger outlook pour \S+"
    r"|enviado desde mi .{1,40}|obtener outlook para \S+"
    r"|enviado do meu .{1,40}|enviado a partir do meu .{1,40}|obter o outlook para \S+"
    r"|verstuurd vanaf mijn .{1,40}|verzonden vanaf mijn .{1,40}|outlook voor \S+ downloaden"
    r"|inviato da .{1,40}|inviato dal mio .{1,40}|scarica outlook per \S+"
    r"|.{1,40}から送信|发自我的.{1,40}|發自我的.{1,40}|从我的.{1,40}发送|來自我的.{1,40})[.。]?",
    re.IGNORECASE,
)
_LINKS = re.compile(r"\]\([^)\s]{0,300}\)|<https?://[^>\s]{0,300}>|[\[\]]")
_MAX_TAGLINE = 200


def new_text(body: str, *, reply: bool = True) -> str:
    """The new text of a message: its body without quoted history and without
    the sender's signature; never raises.

    @param body: the body as aimx stores it (Markdown or plain text; CRLF or LF).
    @param reply: whether the message is a reply (it has In-Reply-To or
        References); one that is not has its whole body as its new text.
    @return: the new text, LF line ends, without blank lines around it and
        without trailing whitespace; C{""} when nothing new is left.
    """
    if not isinstance(body, str):
        return ""
    try:
        return _extract(body, reply)
    except Exception:
        # Content never poisons a message: unexpected input keeps its body.
        return _whole(body)


def stored_new_text(fields, body: str) -> str:
    """The new text of a stored message (C{aimx mail read --extracted}, MCP
    C{email_read} with C{extracted}): a reply is one whose frontmatter has an
    C{in_reply_to} or C{references}.

    @param fields: its frontmatter.
    @param body: its body.
    """
    return new_text(body, reply=bool(fields.get("in_reply_to") or fields.get("references")))


def _lines(body: str) -> list[str]:
    if "\r" in body:
        body = body.replace("\r\n", "\n").replace("\r", "\n")
    return body.split("\n")


def _extract(body: str, reply: bool) -> str:
    if not reply:
        return _whole(body)
    truncated = len(body) > MAX_SCAN
    lines = _lines(body[:MAX_SCAN] if truncated else body)
    if truncated:
        lines.pop()  # the line the cut went through
    kinds = _kinds(lines)
    end = _history_header(lines, kinds)
    if end is None:
        last = _above(kinds, len(kinds))
        if truncated and (last < 0 or kinds[last] != _QUOTE):
            # The sender may write on past what was read: only a quote block
            # still open where the reading stopped is taken as history.
            return _whole(body)
        end = len(lines)
    del lines[end:], kinds[end:]
    end = _signature(lines, kinds)
    del lines[end:], kinds[end:]
    _drop_quotes(lines, kinds)
    return _trimmed(_without_taglines(lines))


def _kinds(lines: list[str]) -> list[str]:
    """Each line's kind: blank, text, quote (C{>} after at most three spaces), or
    code (a fenced code block, CommonMark §4.5: a fence of three or more
    backticks or tildes, closed by a fence of the same character at least as
    long; unclosed, it runs to the end)."""
    kinds = []
    fence = ""
    for line in lines:
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if fence:
            kinds.append(_CODE)
            if indent <= 3 and stripped.startswith(fence) and not stripped.rstrip().lstrip(
                    fence[0]):
                fence = ""
            continue
        first = stripped[:1]
        if not stripped.strip():
            kinds.append(_BLANK)
        elif indent > 3:
            kinds.append(_TEXT)
        elif first == ">":
            kinds.append(_QUOTE)
        elif stripped[:3] in ("```", "~~~"):
            run = len(stripped) - len(stripped.lstrip(first))
            if first == "`" and "`" in stripped[run:]:
                kinds.append(_TEXT)  # inline code, not a fence (its info has no backtick)
            else:
                kinds.append(_CODE)
                fence = first * run
        else:
            kinds.append(_TEXT)
    return kinds


def _marker_text(lines: list[str], kinds: list[str], i: int) -> str | None:
    """Line C{i} stripped when it is text short enough to be a marker."""
    if kinds[i] != _TEXT or len(lines[i]) > MAX_LINE:
        return None
    return lines[i].strip()


def _attribution(lines: list[str], kinds: list[str], i: int, strict: bool) -> int:
    """Where the attribution line ending at line C{i} starts, or -1.

    The line ends in a colon, possibly wrapped from the line right above it (one
    ending in C{<}, starting like "On ...", or holding the address this one
    lacks).  Loose: it has a date, an address or an attribution verb.  Strict
    (for history that is not quoted): a verb, a date, and an address or opener.
    """
    text = _marker_text(lines, kinds, i)
    if not text or not text.endswith(_COLONS):
        return -1
    start = i
    above = _marker_text(lines, kinds, i - 1) if i > 0 else None
    if above and not above.endswith(_COLONS) and (
            above.endswith("<") or _OPENER.match(above) or ("@" in above and "@" not in text)):
        start, text = i - 1, above + " " + text
    if strict:
        found = _DIGIT.search(text) and ("@" in text or _OPENER.match(text)) and _VERB.search(
            text)
    else:
        found = "@" in text or _DIGIT.search(text) or _VERB.search(text)
    return start if found else -1


def _label(text: str) -> str | None:
    match = _LABEL.match(text)
    return match.lastgroup if match else None


def _header_block(lines: list[str], kinds: list[str], i: int) -> bool:
    """Whether line C{i} starts an Outlook header block: a From line and, before
    the next blank line, two of Sent/Date, To and Subject."""
    fields = set()
    for j in range(i + 1, min(i + 1 + _HEADER_LOOKAHEAD, len(lines))):
        text = _marker_text(lines, kinds, j)
        if not text:
            break
        field = _label(text)
        if field == "from":
            break  # the next block
        if field is not None and field != "cc":
            fields.add(field)
    return len(fields) >= 2


def _above(kinds: list[str], i: int) -> int:
    """The nearest line above C{i} that is not blank, or -1."""
    i -= 1
    while i >= 0 and kinds[i] == _BLANK:
        i -= 1
    return i


def _below(kinds: list[str], i: int) -> int:
    """The nearest line at or below C{i} that is not blank, or C{len(kinds)}."""
    while i < len(kinds) and kinds[i] == _BLANK:
        i += 1
    return i


def _history_header(lines: list[str], kinds: list[str]) -> int | None:
    """The line where rule 1's history starts, or L{None}."""
    for i, kind in enumerate(kinds):
        if kind != _TEXT or len(lines[i]) > MAX_LINE:
            continue
        text = lines[i].strip()
        # Cheap tests first: most lines are none of these.
        if text[0] == "-" and _SEPARATOR.fullmatch(text):
            return i
        head = text[:32]
        if (":" in head or "：" in head) and _label(text) == "from" and _header_block(
                lines, kinds, i):
            forward = _above(kinds, i)
            if forward < 0 or not _is_forward(lines, kinds, forward):
                return i
        if text[-1] in _COLONS:
            start = _attribution(lines, kinds, i, strict=True)
            if start >= 0:
                after = _below(kinds, i + 1)
                if after == len(lines) or kinds[after] != _QUOTE:
                    return start
    return None


def _is_forward(lines: list[str], kinds: list[str], i: int) -> bool:
    text = _marker_text(lines, kinds, i)
    return bool(text) and len(text) <= 200 and _FORWARD.fullmatch(
        text.strip("-").rstrip(":：").strip()) is not None


def _signature(lines: list[str], kinds: list[str]) -> int:
    """Where the sender's signature starts (the first C{--} line), or the end."""
    for i, line in enumerate(lines):
        if line[:1] in ("-", "\\") and kinds[i] == _TEXT and line.rstrip() in ("--", "\\--"):
            return i
    return len(lines)


def _drop_quotes(lines: list[str], kinds: list[str]) -> None:
    """Rules 2 and 3: drop the trailing quote block, then a lone quote block, each
    with its attribution."""
    blocks = _quote_blocks(kinds)
    if not blocks:
        return
    start, end = blocks[-1]
    if _below(kinds, end) == len(lines):
        first = _with_attribution(lines, kinds, start)
        del lines[first:], kinds[first:]
        blocks.pop()
    if len(blocks) == 1:
        start, end = blocks[0]
        first = _with_attribution(lines, kinds, start)
        last = _below(kinds, end)
        del lines[first:last], kinds[first:last]


def _quote_blocks(kinds: list[str]) -> list[tuple[int, int]]:
    """C{(first, end)} of each run of quote lines (blank lines inside a run
    belong to it), in order."""
    blocks: list[tuple[int, int]] = []
    start = -1
    last = -1
    for i, kind in enumerate(kinds):
        if kind == _QUOTE:
            if start < 0:
                start = i
            last = i
        elif kind != _BLANK and start >= 0:
            blocks.append((start, last + 1))
            start = -1
    if start >= 0:
        blocks.append((start, last + 1))
    return blocks


def _with_attribution(lines: list[str], kinds: list[str], start: int) -> int:
    """The first line of a quote block starting at C{start} with its attribution."""
    above = _above(kinds, start)
    if above >= 0:
        first = _attribution(lines, kinds, above, strict=False)
        if first >= 0:
            return first
    return start


def _without_taglines(lines: list[str]) -> list[str]:
    """C{lines} without the blank lines, separator lines and taglines at the end."""
    end = len(lines)
    while end:
        line = lines[end - 1]
        if not line.strip() or len(line) <= MAX_LINE and _RULE.fullmatch(line):
            end -= 1
            continue
        if len(line) <= _MAX_TAGLINE and _TAGLINE.fullmatch(_LINKS.sub("", line).strip()):
            end -= 1
            continue
        break
    return lines[:end]


def _whole(body: str) -> str:
    """The whole body as new text: LF line ends, no blank lines around it, no
    trailing whitespace (L{_trimmed}, without splitting a big body into lines)."""
    if "\r" in body:
        body = body.replace("\r\n", "\n").replace("\r", "\n")
    body = body.rstrip()
    start = len(body) - len(body.lstrip())
    return body[body.rfind("\n", 0, start) + 1:]


def _trimmed(lines: list[str]) -> str:
    """The lines without blank lines around them or trailing whitespace."""
    start = 0
    while start < len(lines) and not lines[start].strip():
        start += 1
    return "\n".join(lines[start:]).rstrip()
