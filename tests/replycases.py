"""Real-shaped replies per client and language, with the new text expected
(the table of tests/test_replytext.py; kept apart so a benchmark can read it).

Each body is text as aimx stores it: a text/plain part as sent, or an HTML part
as L{aimx.core.htmltext} renders it.  The attribution lines, Outlook header
blocks and mobile taglines are those the clients write in each language.
"""

#: Per language: the new text of the reply, and the message it answers.
LANGUAGES = {
    "en": ("Sounds good, see you on Tuesday.", "Can we meet on Tuesday?"),
    "de": ("Klingt gut, bis Dienstag.", "Können wir uns am Dienstag treffen?"),
    "fr": ("Ça me va, à mardi.", "Peut-on se voir mardi ?"),
    "es": ("Me parece bien, nos vemos el martes.", "¿Nos vemos el martes?"),
    "pt": ("Parece bom, até terça.", "Podemos nos encontrar na terça?"),
    "nl": ("Klinkt goed, tot dinsdag.", "Kunnen we dinsdag afspreken?"),
    "it": ("Va bene, ci vediamo martedì.", "Possiamo vederci martedì?"),
    "ja": ("了解です。火曜日にお会いしましょう。", "火曜日にお会いできますか？"),
    "zh": ("好的，星期二见。", "我们星期二见面可以吗？"),
}

#: Gmail (web, Android, iOS), plain-text part: the attribution, a blank line, the quote.
GMAIL = {
    "en": "On Mon, Mar 4, 2024 at 10:15\u202fAM Alice Example <alice@example.com> wrote:",
    "de": "Am Mo., 4. März 2024 um 10:15 Uhr schrieb Alice Example <alice@example.com>:",
    "fr": "Le lun. 4 mars 2024 à 10:15, Alice Example <alice@example.com> a écrit :",
    "es": "El lun, 4 mar 2024 a las 10:15, Alice Example (<alice@example.com>) escribió:",
    "pt": "Em seg., 4 de mar. de 2024 às 10:15, Alice Example <alice@example.com> escreveu:",
    "nl": "Op ma 4 mrt 2024 om 10:15 schreef Alice Example <alice@example.com>:",
    "it": "Il giorno lun 4 mar 2024 alle ore 10:15 Alice Example <alice@example.com> ha scritto:",
    "ja": "2024年3月4日(月) 10:15 Alice Example <alice@example.com>:",
    "zh": "Alice Example <alice@example.com> 于2024年3月4日周一 10:15写道：",
}

#: Apple Mail (macOS, iOS): the attribution is the first line of the quote.
APPLE = {
    "en": "On Mar 4, 2024, at 10:15, Alice Example <alice@example.com> wrote:",
    "de": "Am 04.03.2024 um 10:15 schrieb Alice Example <alice@example.com>:",
    "fr": "Le 4 mars 2024 à 10:15, Alice Example <alice@example.com> a écrit :",
    "es": "El 4 mar 2024, a las 10:15, Alice Example <alice@example.com> escribió:",
    "pt": "Em 4 de mar. de 2024, à(s) 10:15, Alice Example <alice@example.com> escreveu:",
    "nl": "Op 4 mrt 2024 om 10:15 heeft Alice Example <alice@example.com> het volgende "
          "geschreven:",
    "it": "Il giorno 4 mar 2024, alle ore 10:15, Alice Example <alice@example.com> ha scritto:",
    "ja": "2024/03/04 10:15、Alice Example <alice@example.com>のメール:",
    "zh": "2024年3月4日 10:15，Alice Example <alice@example.com> 写道：",
}

#: iOS Mail's tagline, per language.
IPHONE = {
    "en": "Sent from my iPhone",
    "de": "Von meinem iPhone gesendet",
    "fr": "Envoyé de mon iPhone",
    "es": "Enviado desde mi iPhone",
    "pt": "Enviado do meu iPhone",
    "nl": "Verstuurd vanaf mijn iPhone",
    "it": "Inviato da iPhone",
    "ja": "iPhoneから送信",
    "zh": "发自我的iPhone",
}

#: Thunderbird: the attribution directly above the quote.
THUNDERBIRD = {
    "en": "On 3/4/24 10:15 AM, Alice Example wrote:",
    "de": "Am 04.03.24 um 10:15 schrieb Alice Example:",
    "fr": "Le 04/03/2024 à 10:15, Alice Example a écrit :",
    "es": "El 4/3/24 a las 10:15, Alice Example escribió:",
    "pt": "Em 04/03/2024 10:15, Alice Example escreveu:",
    "nl": "Op 04-03-2024 om 10:15 schreef Alice Example:",
    "it": "Il 04/03/24 10:15, Alice Example ha scritto:",
    "ja": "2024/03/04 10:15 に Alice Example さんは書きました:",
    "zh": "在 2024/3/4 10:15, Alice Example 写道:",
}

#: Outlook for Windows, plain text: the separator line and the header block, per
#: language (Outlook writes the history below it unquoted).
OUTLOOK = {
    "en": ("-----Original Message-----",
           "From: Alice Example <alice@example.com> \nSent: Monday, March 4, 2024 10:15 AM\n"
           "To: Bob Example <bob@example.com>\nSubject: Tuesday"),
    "de": ("-----Ursprüngliche Nachricht-----",
           "Von: Alice Example <alice@example.com> \nGesendet: Montag, 4. März 2024 10:15\n"
           "An: Bob Example <bob@example.com>\nBetreff: Dienstag"),
    "fr": ("-----Message d'origine-----",
           "De : Alice Example <alice@example.com> \nEnvoyé : lundi 4 mars 2024 10:15\n"
           "À : Bob Example <bob@example.com>\nObjet : mardi"),
    "es": ("-----Mensaje original-----",
           "De: Alice Example <alice@example.com> \nEnviado el: lunes, 4 de marzo de 2024 10:15\n"
           "Para: Bob Example <bob@example.com>\nAsunto: martes"),
    "pt": ("-----Mensagem original-----",
           "De: Alice Example <alice@example.com> \n"
           "Enviada em: segunda-feira, 4 de março de 2024 10:15\n"
           "Para: Bob Example <bob@example.com>\nAssunto: terça"),
    "nl": ("-----Oorspronkelijk bericht-----",
           "Van: Alice Example <alice@example.com> \nVerzonden: maandag 4 maart 2024 10:15\n"
           "Aan: Bob Example <bob@example.com>\nOnderwerp: dinsdag"),
    "it": ("-----Messaggio originale-----",
           "Da: Alice Example <alice@example.com> \nInviato: lunedì 4 marzo 2024 10:15\n"
           "A: Bob Example <bob@example.com>\nOggetto: martedì"),
    "ja": ("-----Original Message-----",
           "差出人: Alice Example <alice@example.com> \n送信日時: 2024年3月4日 10:15\n"
           "宛先: Bob Example <bob@example.com>\n件名: 火曜日"),
    "zh": ("-----原始邮件-----",
           "发件人: Alice Example <alice@example.com> \n发送时间: 2024年3月4日 10:15\n"
           "收件人: Bob Example <bob@example.com>\n主题: 星期二"),
}

SIGNATURE = "-- \nBob Example\nExample Corp | +1 555 0100"


def _quoted(text: str, prefix: str = "> ") -> str:
    return "\n".join(prefix + line if line else prefix.rstrip() for line in text.split("\n"))


def _table():
    rows = []
    for lang, (reply, original) in LANGUAGES.items():
        history = f"{original}\n\nAlice"
        rows.append((f"gmail {lang}", f"{reply}\n\n{GMAIL[lang]}\n\n{_quoted(history)}\n", reply))
        rows.append((
            f"gmail {lang} with signature",
            f"{reply}\n\n{SIGNATURE}\n\n{GMAIL[lang]}\n\n{_quoted(history)}\n", reply))
        rows.append((
            f"apple mail {lang}",
            f"{reply}\n\n{_quoted(APPLE[lang] + chr(10) + chr(10) + history)}\n\n", reply))
        rows.append((
            f"ios mail {lang}",
            f"{reply}\n\n{IPHONE[lang]}\n\n"
            f"{_quoted(APPLE[lang] + chr(10) + chr(10) + chr(0xFEFF) + history)}\n", reply))
        rows.append((
            f"thunderbird {lang} above the quote",
            f"{reply}\n\n{THUNDERBIRD[lang]}\n{_quoted(history)}\n", reply))
        rows.append((
            f"thunderbird {lang} below the quote",
            f"{THUNDERBIRD[lang]}\n{_quoted(history)}\n\n{reply}\n\n{SIGNATURE}\n", reply))
        separator, headers = OUTLOOK[lang]
        rows.append((
            f"outlook {lang} original message",
            f"{reply}\n\n{separator}\n{headers}\n\n{history}\n", reply))
        rows.append((
            f"outlook {lang} header block",
            f"{reply}\n\n{headers}\n\n{history}\n".replace("\n", "\r\n"), reply))
        rows.append((
            f"outlook web {lang} (HTML as Markdown)",
            f"{reply}\n\n---\n\n"
            + "  \n".join(f"**{name}:** {value}" for name, _, value in (
                line.rstrip().partition(": ") for line in headers.split("\n")))
            + f"\n\n{history}\n", reply))
    return rows


#: (name, body, new text expected): every client in every language.
CLIENT_CASES = _table()

#: (name, body, new text expected): shapes that are not one client in one language.
SHAPE_CASES = [
    ("not a reply: the whole body",
     "Hello,\n\nplease find the figures below.\n\n- one\n- two\n\nThanks,\nAlice\n",
     "Hello,\n\nplease find the figures below.\n\n- one\n- two\n\nThanks,\nAlice"),
    ("empty body", "", ""),
    ("gmail attribution wrapped before the address",
     "Yes.\n\nOn Mon, Mar 4, 2024 at 10:15\u202fAM Alice Marie Example-Longname <\n"
     "alice.longname@example.com> wrote:\n\n> Can we meet?\n",
     "Yes."),
    ("gmail attribution wrapped before wrote",
     "Yes.\n\nOn Mon, Mar 4, 2024 at 10:15 AM Alice Marie Example <alice@example.com>\n"
     "wrote:\n\n> Can we meet?\n",
     "Yes."),
    ("gmail zh-TW",
     "好的。\n\nAlice Example <alice@example.com> 於 2024年3月4日 週一 上午10:15寫道：\n\n> 可以嗎？\n",
     "好的。"),
    ("gmail pt-PT",
     "Combinado.\n\nAlice Example <alice@example.com> escreveu no dia segunda, 4/03/2024 à(s) "
     "10:15:\n\n> Podemos falar?\n",
     "Combinado."),
    ("gmail in a language without a pattern (Russian)",
     "Да, подходит.\n\nпн, 4 мар. 2024 г. в 10:15, Alice Example <alice@example.com>:\n\n"
     "> Встретимся во вторник?\n",
     "Да, подходит."),
    ("nested quotes of a long thread",
     "Agreed.\n\nOn Tue, Mar 5, 2024 at 9:00 AM Bob <bob@example.com> wrote:\n\n> Fine by me.\n>\n"
     "> On Mon, Mar 4, 2024 at 10:15 AM Alice <alice@example.com> wrote:\n>\n>> Tuesday?\n",
     "Agreed."),
    ("interleaved reply keeps its quotes as context",
     "On 3/4/24 10:15 AM, Alice Example wrote:\n> Can we meet on Tuesday?\n\nYes, at 10.\n\n"
     "> And should I bring the slides?\n\nPlease do.\n\n> Alice\n> --\n> Example Corp\n",
     "On 3/4/24 10:15 AM, Alice Example wrote:\n> Can we meet on Tuesday?\n\nYes, at 10.\n\n"
     "> And should I bring the slides?\n\nPlease do."),
    ("quote without an attribution at the end",
     "Done.\n\n> Please send the report.\n> Thanks\n", "Done."),
    ("a colon line before a trailing quote without digits or an address stays",
     "I agree with this part:\n\n> The plan is fine.\n", "I agree with this part:"),
    ("a quote in the middle of a message with one block is history",
     "Hi Alice,\n\n> Can we meet on Tuesday?\n\nYes, Tuesday works.\n", "Hi Alice,\n\nYes, Tuesday works."),
    ("outlook web plain text: underscores and the header block",
     "Done.\n\nGet Outlook for iOS<https://aka.ms/o0ukef>\n________________________________\n"
     "From: Alice Example <alice@example.com>\nSent: Monday, March 4, 2024 10:15:01 AM\n"
     "To: Bob Example <bob@example.com>\nSubject: Tuesday\n\nCan we meet?\n",
     "Done."),
    ("outlook for mac: From, Date, To, Subject",
     "Done.\n\nFrom: Alice Example <alice@example.com>\nDate: Monday, 4 March 2024 at 10:15\n"
     "To: Bob Example <bob@example.com>\nSubject: Tuesday\n\nCan we meet?\n",
     "Done."),
    ("outlook zh with full-width colons",
     "好的。\n\n发件人： Alice Example <alice@example.com>\n发送时间： 2024年3月4日 10:15\n"
     "收件人： Bob Example <bob@example.com>\n主题： 星期二\n\n可以吗？\n",
     "好的。"),
    ("outlook fr with no-break spaces before the colons",
     "D'accord.\n\nDe\u00a0: Alice Example <alice@example.com>\nEnvoyé\u00a0: lundi 4 mars 2024 10:15\n"
     "À\u00a0: Bob Example <bob@example.com>\nObjet\u00a0: mardi\n\nMardi ?\n",
     "D'accord."),
    ("samsung email: original message and tagline",
     "OK.\n\n\nSent from my Galaxy\n\n\n-------- Original message --------\n"
     "From: Alice Example <alice@example.com> \nDate: 3/4/24 10:15 (GMT+01:00) \n"
     "To: bob@example.com \nSubject: Tuesday \n\nCan we meet?\n",
     "OK."),
    ("outlook mobile tagline as a Markdown link",
     "Fine.\n\nGet [Outlook for Android](https://aka.ms/AAb9ysg)\n\n---\n\n"
     "**From:** Alice Example <alice@example.com>  \n**Sent:** Monday, March 4, 2024 10:15 AM  \n"
     "**To:** Bob Example <bob@example.com>  \n**Subject:** Tuesday\n\nCan we meet?\n",
     "Fine."),
    ("yahoo: attribution over an unquoted history",
     "Works for me.\n\nOn Monday, March 4, 2024, 10:15:02 AM GMT+1, Alice Example "
     "<alice@example.com> wrote:\n\nCan we meet on Tuesday?\n",
     "Works for me."),
    ("signature only, no history",
     "Sounds good.\n\n-- \nBob Example\nhttps://example.com\n", "Sounds good."),
    ("signature delimiter whose trailing space was stripped",
     "Sounds good.\n\n--\nBob Example\n", "Sounds good."),
    ("signature delimiter escaped by the HTML conversion",
     "Thanks  \n\\--  \nBob\n", "Thanks"),
    ("lines that merely contain -- are kept",
     "Run it with --force.\n---\nA -- B\n--verbose\n-- not a delimiter\n",
     "Run it with --force.\n---\nA -- B\n--verbose\n-- not a delimiter"),
    ("a fenced block with quote-like lines is text",
     "Here is the session:\n\n```\n$ cat <<EOF\n> line one\n> line two\n```\n",
     "Here is the session:\n\n```\n$ cat <<EOF\n> line one\n> line two\n```"),
    ("a forward keeps its forwarded message",
     "FYI, see below.\n\n---------- Forwarded message ---------\nFrom: Alice Example "
     "<alice@example.com>\nDate: Mon, Mar 4, 2024 at 10:15 AM\nSubject: Tuesday\n"
     "To: Bob Example <bob@example.com>\n\n\nCan we meet on Tuesday?\n",
     "FYI, see below.\n\n---------- Forwarded message ---------\nFrom: Alice Example "
     "<alice@example.com>\nDate: Mon, Mar 4, 2024 at 10:15 AM\nSubject: Tuesday\n"
     "To: Bob Example <bob@example.com>\n\n\nCan we meet on Tuesday?"),
    ("apple forward keeps its forwarded message",
     "See this.\n\nBegin forwarded message:\n\nFrom: Alice Example <alice@example.com>\n"
     "Subject: Tuesday\nDate: March 4, 2024 at 10:15:00 GMT+1\nTo: Bob Example <bob@example.com>\n"
     "\nCan we meet?\n",
     "See this.\n\nBegin forwarded message:\n\nFrom: Alice Example <alice@example.com>\n"
     "Subject: Tuesday\nDate: March 4, 2024 at 10:15:00 GMT+1\nTo: Bob Example <bob@example.com>\n"
     "\nCan we meet?"),
    ("a From: line in prose is not a header block",
     "From: the team\n\nWe ship on Friday.\n", "From: the team\n\nWe ship on Friday."),
    ("only history: empty new text",
     "On Mon, Mar 4, 2024 at 10:15 AM Alice <alice@example.com> wrote:\n\n> Ping?\n", ""),
    ("CRLF line ends", "Yes.\r\n\r\nOn Mon, Mar 4, 2024 at 10:15 AM Alice <a@example.com> wrote:"
     "\r\n> Ping?\r\n", "Yes."),
    ("indentation and Markdown of the new text are kept",
     "Steps:\n\n1. build\n   - with `make`\n\n        code block\n\n"
     "On Mon, Mar 4, 2024 at 10:15 AM Alice <alice@example.com> wrote:\n> How?\n",
     "Steps:\n\n1. build\n   - with `make`\n\n        code block"),
]
