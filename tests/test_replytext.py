"""The new text of a message (L{aimx.core.replytext})."""

import random
import time

from twisted.trial.unittest import SynchronousTestCase

from aimx.core import replytext
from aimx.core.message import parse_message
from aimx.core.replytext import MAX_LINE, MAX_SCAN, new_text
from tests.replycases import CLIENT_CASES, LANGUAGES, SHAPE_CASES

CLIENTS = ("gmail", "gmail with signature", "apple mail", "ios mail",
           "thunderbird above the quote", "thunderbird below the quote",
           "outlook original message", "outlook header block", "outlook web (HTML as Markdown)")


class TableTests(SynchronousTestCase):
    def test_table_covers_clients_and_languages(self):
        """The table has every client shape in each of the nine languages."""
        seen = set()
        for name, _, _ in CLIENT_CASES:
            words = name.split()
            lang = next(w for w in words if w in LANGUAGES)
            seen.add((" ".join(w for w in words if w != lang), lang))
        self.assertEqual(seen, {(c, lang) for c in CLIENTS for lang in LANGUAGES})
        self.assertEqual(len(CLIENT_CASES), 81)

    def test_clients(self):
        """Each client's reply in each language has exactly the sender's new text."""
        for name, body, expected in CLIENT_CASES:
            self.assertEqual(new_text(body), expected, name)

    def test_shapes(self):
        """Wrapped attributions, other languages, interleaved replies, forwards,
        signatures, taglines and text that only looks like history."""
        for name, body, expected in SHAPE_CASES:
            self.assertEqual(new_text(body), expected, name)

    def test_not_a_reply(self):
        """A message that is not a reply has its whole body as its new text,
        quotes and signature included (only line ends and outer blank lines change)."""
        for name, body, _ in CLIENT_CASES + SHAPE_CASES:
            whole = body.replace("\r\n", "\n").strip("\n").rstrip()
            self.assertEqual(new_text(body, reply=False), whole, name)
        self.assertEqual(new_text("\n\n  indented\n\n-- \nBob\n", reply=False),
                         "  indented\n\n-- \nBob")

    def test_idempotent(self):
        """The new text of a new text is itself."""
        for name, body, expected in CLIENT_CASES + SHAPE_CASES:
            self.assertEqual(new_text(new_text(body)), expected, name)


class SignatureTests(SynchronousTestCase):
    def test_delimiter_forms(self):
        """C{"-- "}, C{"--"} and the escaped C{"\\--"} start the signature."""
        for line in ("-- ", "--", "--\t", "\\--  "):
            self.assertEqual(new_text(f"Yes.\n{line}\nBob\nCEO\n"), "Yes.", repr(line))

    def test_lines_merely_containing_dashes(self):
        """Dashes inside a line, more or fewer dashes, or text after them: no signature."""
        for line in ("---", "-", "- --", "--x", "x --", "-- Bob", " -- ", "----"):
            body = f"Yes.\n{line}\nmore text\n"
            self.assertEqual(new_text(body), body.strip(), repr(line))

    def test_first_delimiter(self):
        """The signature starts at the first delimiter; a quoted one is history."""
        self.assertEqual(new_text("a\n-- \nsig\n-- \nmore\n"), "a")
        self.assertEqual(new_text("a\n\n> -- \n> old sig\n\nb\n"), "a\n\nb")

    def test_delimiter_in_code(self):
        """A delimiter inside a fenced code block is code."""
        body = "Output:\n~~~\n--\nok\n~~~\nThat's all.\n"
        self.assertEqual(new_text(body), body.strip())

    def test_taglines_only_at_the_end(self):
        """A tagline is dropped only as the last line of the new text."""
        self.assertEqual(new_text("Sent from my iPhone\n\nreally.\n"), "Sent from my iPhone\n\nreally.")
        self.assertEqual(new_text("ok\n\nSent from my iPad\n"), "ok")
        self.assertEqual(new_text("ok\n\nEnviado do meu Android\n"), "ok")
        self.assertEqual(new_text("ok\n\nGet Outlook for iOS<https://aka.ms/o0ukef>\n"), "ok")


class HistoryTests(SynchronousTestCase):
    def test_interleaved_keeps_context(self):
        """Two quoted points answered keep their quotes; the history after the last
        answer goes."""
        body = ("> first?\n\none\n\n> second?\n\ntwo\n\n"
                "On Mon, Mar 4, 2024 at 10:15 AM Alice <alice@example.com> wrote:\n> first?\n")
        self.assertEqual(new_text(body), "> first?\n\none\n\n> second?\n\ntwo")

    def test_header_block_needs_two_fields(self):
        """A From line with only one other field before a blank line is text."""
        body = "From: Alice Example\nTo: the team\n\nPlan attached.\n"
        self.assertEqual(new_text(body), body.strip())

    def test_header_block_first_field_is_from(self):
        """Sent/To/Subject lines without a From line above them are text."""
        body = "Subject: budget\nTo: all\nDate: Monday\n\nSee attached.\n"
        self.assertEqual(new_text(body), body.strip())

    def test_separator_cuts_even_without_headers(self):
        """An original-message separator alone starts the history."""
        self.assertEqual(new_text("ok\n\n----- Original Message -----\nold text\n"), "ok")

    def test_attribution_in_prose_over_text(self):
        """"wrote:" without a date stays text when unquoted text follows."""
        body = "On the forum someone wrote:\nthe plan is bad.\n\nWhat do you think?\n"
        self.assertEqual(new_text(body), body.strip())


def _message(*parts: tuple[str, str]) -> bytes:
    """A reply with the given (content type, text) parts: one, or an alternative."""
    head = ("From: Bob Example <bob@example.com>\r\nTo: alice@test.local\r\n"
            "Subject: Re: Tuesday\r\nIn-Reply-To: <1@example.com>\r\nMIME-Version: 1.0\r\n")
    if len(parts) == 1:
        ctype, text = parts[0]
        return (head + f"Content-Type: {ctype}; charset=utf-8\r\n\r\n{text}").encode()
    inner = "".join(f"--B\r\nContent-Type: {ctype}; charset=utf-8\r\n\r\n{text}\r\n"
                    for ctype, text in parts)
    return (head + 'Content-Type: multipart/alternative; boundary="B"\r\n\r\n'
            + inner + "--B--\r\n").encode()


def _extracted(raw: bytes) -> str:
    parsed = parse_message(raw)
    return new_text(parsed.body, reply=parsed.in_reply_to is not None)


GMAIL_HTML = (
    '<div dir="ltr">네, 좋아요.<br clear="all"><br><span class="gmail_signature_prefix">-- </span>'
    '<br><div dir="ltr" class="gmail_signature" data-smartmail="gmail_signature">'
    '<div dir="ltr">Bob Example<br>Example Corp</div></div></div><br>'
    '<div class="gmail_quote gmail_quote_container"><div dir="ltr" class="gmail_attr">'
    '2024년 3월 4일 (월) 오전 10:15, Alice Example &lt;<a href="mailto:alice@example.com">'
    'alice@example.com</a>&gt;님이 작성:<br></div><blockquote class="gmail_quote" '
    'style="margin:0px 0px 0px 0.8ex;border-left:1px solid rgb(204,204,204);padding-left:1ex">'
    '<div dir="ltr">화요일에 만날까요?</div></blockquote></div>'
)
OUTLOOK_WEB_HTML = (
    '<html><body><div dir="ltr" class="elementToProof">Да, подходит.</div>'
    '<div id="appendonsend"></div><hr style="display:inline-block;width:98%" tabindex="-1">'
    '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri, sans-serif" style="font-size:11pt" '
    'color="#000000"><b>От:</b> Alice Example &lt;alice@example.com&gt;<br><b>Отправлено:</b> '
    '4 марта 2024 г. 10:15<br><b>Кому:</b> Bob Example &lt;bob@example.com&gt;<br>'
    '<b>Тема:</b> Вторник</font><div>&nbsp;</div></div><div class="BodyFragment">'
    '<font size="2"><span style="font-size:11pt;"><div class="PlainText">Встретимся во вторник?'
    '<br><br>Alice</div></span></font></div></body></html>'
)
OUTLOOK_WORD_HTML = (
    "<html><body lang=DE><div class=WordSection1><p class=MsoNormal>Klingt gut.<o:p></o:p></p>"
    "<p class=MsoNormal><o:p>&nbsp;</o:p></p><p class=MsoNormal>Gruß<br>Bob<o:p></o:p></p>"
    "<div><div style='border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm 0cm 0cm'>"
    "<p class=MsoNormal><b>Von:</b> Alice Example &lt;alice@example.com&gt; <br>"
    "<b>Gesendet:</b> Montag, 4. März 2024 10:15<br><b>An:</b> Bob Example "
    "&lt;bob@example.com&gt;<br><b>Betreff:</b> Dienstag<o:p></o:p></p></div></div>"
    "<p class=MsoNormal><o:p>&nbsp;</o:p></p><p class=MsoNormal>Dienstag?<o:p></o:p></p>"
    "</div></body></html>"
)
NEW_OUTLOOK_HTML = (
    '<div class="elementToProof">Sì, va bene.</div><br>'
    '<div id="mail-editor-reference-message-container"><div class="ms-outlook-mobile-reference-'
    'message skipProofing"></div><div style="border-width:1pt medium medium;border-style:solid '
    'none none;border-color:rgb(181,196,223) currentcolor currentcolor;padding:3pt 0in 0in">'
    '<b>Da: </b>Alice Example &lt;alice@example.com&gt;<br><b>Data: </b>lunedì, 4 marzo 2024 '
    '10:15<br><b>A: </b>Bob Example &lt;bob@example.com&gt;<br><b>Oggetto: </b>Martedì<br>'
    '</div><br><div>Possiamo vederci martedì?</div></div>'
)
APPLE_HTML = (
    '<html><head></head><body dir="auto"><div dir="ltr">Ça me va.</div><div dir="ltr"><br>'
    '<blockquote type="cite">Le 4 mars 2024 à 10:15, Alice Example &lt;alice@example.com&gt; '
    'a écrit&nbsp;:<br><br></blockquote></div><blockquote type="cite"><div dir="ltr">Mardi ?'
    '</div></blockquote></body></html>'
)
THUNDERBIRD_HTML = (
    '<html><head><meta http-equiv="content-type" content="text/html; charset=UTF-8"></head>'
    '<body><p>Klinkt goed.</p><div class="moz-cite-prefix">Op 04-03-2024 om 10:15 schreef '
    'Alice Example:<br></div><blockquote type="cite" cite="mid:1@example.com"><p>Dinsdag?</p>'
    '</blockquote></body></html>'
)


class HtmlContainerTests(SynchronousTestCase):
    """Raw MIME through L{parse_message} and L{new_text}: HTML bodies as stored."""

    def test_gmail_quote(self):
        """Gmail's quote container and signature, in a language without a pattern."""
        self.assertEqual(_extracted(_message(("text/html", GMAIL_HTML))), "네, 좋아요.")

    def test_gmail_alternative(self):
        """Of Gmail's alternative the plain part is read, with the same result."""
        plain = ("네, 좋아요.\n\n-- \nBob Example\nExample Corp\n\n2024년 3월 4일 (월) 오전 10:15, "
                 "Alice Example <alice@example.com>님이 작성:\n\n> 화요일에 만날까요?\n")
        raw = _message(("text/plain", plain.replace("\n", "\r\n")), ("text/html", GMAIL_HTML))
        self.assertEqual(_extracted(raw), "네, 좋아요.")

    def test_outlook_web(self):
        """Outlook on the web's divRplyFwdMsg header in a language without labels of ours."""
        parsed = parse_message(_message(("text/html", OUTLOOK_WEB_HTML)))
        self.assertIn("> **От:** Alice Example", parsed.body)
        self.assertIn("> Встретимся во вторник?", parsed.body)
        self.assertEqual(new_text(parsed.body), "Да, подходит.")

    def test_outlook_desktop(self):
        """Outlook for Windows' top-bordered header div (Word HTML)."""
        self.assertEqual(_extracted(_message(("text/html", OUTLOOK_WORD_HTML))),
                         "Klingt gut.\n\nGruß  \nBob")

    def test_new_outlook(self):
        """The new Outlook's reference-message container."""
        self.assertEqual(_extracted(_message(("text/html", NEW_OUTLOOK_HTML))), "Sì, va bene.")

    def test_apple_and_thunderbird_html(self):
        """Apple Mail's and Thunderbird's cite blockquotes."""
        self.assertEqual(_extracted(_message(("text/html", APPLE_HTML))), "Ça me va.")
        self.assertEqual(_extracted(_message(("text/html", THUNDERBIRD_HTML))), "Klinkt goed.")

    def test_not_a_reply_keeps_all(self):
        """Without In-Reply-To the same HTML keeps its whole body."""
        raw = _message(("text/html", GMAIL_HTML)).replace(b"In-Reply-To: <1@example.com>\r\n", b"")
        parsed = parse_message(raw)
        self.assertEqual(_extracted(raw), parsed.body.strip())
        self.assertIn("> 화요일에 만날까요?", _extracted(raw))


class BoundsTests(SynchronousTestCase):
    """Input size and shape are bounded (counted or as CPU-time ratios, never a wall clock)."""

    def test_never_raises(self):
        """Random bodies of marker fragments: no exception, and every line of the new
        text is a line of the body."""
        pieces = ["> ", ">", "On 1 a@b wrote:", "wrote:", "From: a", "Sent: b", "To: c",
                  "Subject: d", "-- ", "--", "\\--", "```", "~~~", "-----Original Message-----",
                  "________________________________", "Sent from my iPhone", "\n", "\n", "\n",
                  "\r\n", "\r", " ", "x", "写道：", "**From:**", "\ud800", "\x00", "：", "   >"]
        rng = random.Random(15)
        for _ in range(2000):
            body = "".join(rng.choice(pieces) for _ in range(rng.randrange(40)))
            for reply in (True, False):
                out = replytext._extract(body, reply)
                lines = {line.rstrip() for line in
                         body.replace("\r\n", "\n").replace("\r", "\n").split("\n")}
                for line in out.split("\n") if out else ():
                    self.assertIn(line.rstrip(), lines, repr(body))
        self.assertEqual(new_text(None), "")  # type: ignore[arg-type]
        self.assertEqual(new_text(b"> x"), "")  # type: ignore[arg-type]

    def test_long_lines_are_not_markers(self):
        """An attribution, separator or header line longer than MAX_LINE is text."""
        pad = "x" * MAX_LINE
        for lines in (f"On 1 Mar, {pad} <a@b.example> wrote:\nold text",
                      f"-----Original Message-----{pad}",
                      f"From: {pad}\nSent: x\nTo: y", f"From: a\nSent: {pad}\nTo: y"):
            body = f"ok\n\n{lines}\n\nold\n"
            self.assertEqual(new_text(body), body.strip(), lines[:20])

    def test_scan_limit(self):
        """Past MAX_SCAN characters a body is cut only at a history header read before
        the limit or at a quote still open there; otherwise it is whole."""
        filler = "text line\n" * (MAX_SCAN // 10)
        header = "-----Original Message-----\nFrom: a\n"
        self.assertEqual(new_text("new\n\n" + header + filler), "new")
        whole = "new\n\n" + filler + header
        self.assertEqual(new_text(whole), whole.strip())
        quoted = "new\n\nOn 1 Mar 2024, a@b.example wrote:\n" + "> old\n" * MAX_SCAN
        self.assertEqual(new_text(quoted), "new")
        bottom = "> old\n" * MAX_SCAN + "\nnew\n"
        self.assertEqual(new_text(bottom), "")  # the answer below 128 KiB of quote is not read

    def test_reads_at_most_max_scan(self):
        """However big the body, at most MAX_SCAN characters are split and classified."""
        seen = []
        kinds = replytext._kinds
        self.patch(replytext, "_kinds", lambda lines: seen.append(
            sum(len(line) + 1 for line in lines)) or kinds(lines))
        for unit in ("> q\n", "\n", "On x wrote:\n", "a"):
            del seen[:]
            new_text(unit * (8 * 1024 * 1024 // len(unit)))
            self.assertEqual(len(seen), 1, unit)
            self.assertLessEqual(seen[0], MAX_SCAN + 1, unit)

    def test_hostile_input_stays_linear(self):
        """4x the input costs about 4x the CPU for bodies made of one repeated marker
        shape (this process's CPU time, best of three: load elsewhere does not move it)."""

        def cpu(body: str) -> float:
            best = float("inf")
            for _ in range(3):
                started = time.process_time()
                replytext._extract(body, True)
                best = min(best, time.process_time() - started)
            return best

        for unit in ("> q\n", "On x wrote:\n", "On 1 x wrote:\n> q\n", "From: a\nSent: b\n",
                     "From: a\n" + "Cc: b\n" * 7, "t\n> q\n", "\n", "-- \n", "```\n",
                     "x\n\nFrom: a\n", "---------- Forwarded message ---------\nFrom: a\nDate: b\n"
                     "To: c\n", " On 1 <a@b> wrote" * 50 + ":\n", "a <\n" + "b@c wrote:\n",
                     "Sent from my iPhone\n"):
            count = 20_000 // len(unit) + 1
            small, large = cpu(unit * count), cpu(unit * 4 * count)
            self.assertLess(large / max(small, 1e-6), 9, unit)


class StoredTests(SynchronousTestCase):
    def test_reply_by_its_frontmatter(self):
        """A stored message is a reply when its frontmatter has in_reply_to or references;
        any other keeps its whole body."""
        body = "Fine.\n\nOn Mon, 1 Jun 2025, Alice <a@example.com> wrote:\n> Earlier\n"
        for fields in ({"in_reply_to": "a@x"}, {"references": "a@x b@x"},
                       {"in_reply_to": "a@x", "references": ""}):
            self.assertEqual(replytext.stored_new_text(fields, body), "Fine.", fields)
        for fields in ({}, {"in_reply_to": "", "references": None}):
            self.assertEqual(replytext.stored_new_text(fields, body), body.rstrip("\n"), fields)
