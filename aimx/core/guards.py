"""Content guards: patterns looked for in an inbound message (L0, pure).

docs/guardrails.md, "Content guards": a mailbox's C{[[mailboxes.<name>.guards]]}
tables (or C{guards = "default"}) name patterns to look for in a message's
subject, body or From; a match makes the stored copy C{risk = "review"}
(L{aimx.core.risk}).  The shipped set is L{DEFAULT_GUARDS}.

The patterns are RE2 syntax, matched by Google's RE2 (the C{google-re2}
package): an automaton, so a search takes time linear in the text whatever the
pattern, and what would need backtracking (backreferences, lookaround) or a
program larger than L{MAX_MEM} is refused when the config loads.  Python's
C{re} has no time limit, and the C{regex} package's C{timeout=} would make a
verdict depend on the machine's load.  Each field is normalised (NFKC, so
full-width and compatibility letters read as plain ones; any run of white space
becomes one space, or one line break) and only its first L{SCAN_CAP}
characters are read, so that no search holds the interpreter long.  Matching
ignores case.
"""

import re
import unicodedata
from collections.abc import Mapping, Sequence

import attrs
import re2

#: The fields a guard may read, and those it reads when its table names none.
FIELDS = ("subject", "body", "from")
DEFAULT_FIELDS = ("subject", "body")
#: C{guards = "default"}, and C{use = "default"} in a guard table.
DEFAULT = "default"
#: Characters of a field that are searched (after normalisation): the default set
#: reads 256 KiB of a body in about 10 ms (docs/guardrails.md).
SCAN_CAP = 256 * 1024
#: The longest pattern accepted, and the most guards one mailbox may have.
MAX_PATTERN = 4096
MAX_GUARDS = 64
#: RE2's memory budget for one compiled pattern (its program and DFA cache).
MAX_MEM = 4 * 1024 * 1024
NAME = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_.-]{0,127}")

_OPTIONS = re2.Options()
_OPTIONS.case_sensitive = False
_OPTIONS.log_errors = False
_OPTIONS.max_mem = MAX_MEM
#: Line breaks become newlines, then any other white space, and any run of it, one
#: space or newline (RE2's C{\s} is ASCII only: a no-break space must not split a
#: phrase unseen).  Single spaces are left alone: replacing each costs more than
#: the search.
_BREAKS = {ord(c): "\n" for c in "\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}
_SPACE = re.compile(r"\s{2,}|[^\S \n]")


def compile_pattern(pattern: str):
    """The compiled RE2 program of C{pattern}.

    @raise ValueError: why RE2 refuses it (backreferences, lookaround, a
        repetition over 1000, a program over L{MAX_MEM}), or it is too long.
    """
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"pattern is {len(pattern)} characters long; the maximum is "
                         f"{MAX_PATTERN}")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as e:
        reason = e.args[0] if e.args else "invalid"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(f"not an RE2 pattern: {reason}") from None


@attrs.frozen
class Guard:
    """One guard: a name, an RE2 pattern and the fields it reads.

    @raise ValueError: the pattern does not compile (L{compile_pattern}).
    """

    name: str
    pattern: str
    fields: tuple[str, ...] = attrs.field(default=DEFAULT_FIELDS, converter=tuple)
    _program: object = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self):
        object.__setattr__(self, "_program", compile_pattern(self.pattern))

    def search(self, text: str) -> bool:
        """Whether the pattern occurs in C{text} (already L{normalise}d)."""
        return self._program.search(text) is not None


@attrs.frozen
class Hit:
    """A guard that matched, and the first field it matched in."""

    guard: str
    field: str


def normalise(text: str) -> str:
    """A field as the guards read it: its first L{SCAN_CAP} characters, NFKC, and every
    run of white space one space (one newline when the run holds a line break)."""
    text = unicodedata.normalize("NFKC", text[:SCAN_CAP])[:SCAN_CAP].translate(_BREAKS)
    return _SPACE.sub(lambda m: "\n" if "\n" in m.group() else " ", text)


def effective(entries) -> tuple[Guard, ...]:
    """A mailbox's guards: C{"default"} (alone or as an entry) is L{DEFAULT_GUARDS}.

    @param entries: the mailbox's C{guards} as loaded: C{None}, C{"default"}, or a
        tuple of L{Guard}s and C{"default"} entries.
    """
    if entries is None:
        return ()
    if entries == DEFAULT:
        return DEFAULT_GUARDS
    out: list[Guard] = []
    for entry in entries:
        out += DEFAULT_GUARDS if entry == DEFAULT else (entry,)
    return tuple(out)


def evaluate(guards: Sequence[Guard], fields: Mapping[str, str]) -> tuple[Hit, ...]:
    """The guards that match, each once, in guard order.

    @param fields: the raw text of each of L{FIELDS} (normalised here, once).
    """
    if not guards:
        return ()
    normal = {}
    hits = []
    for guard in guards:
        for field in guard.fields:
            if field not in normal:
                normal[field] = normalise(fields.get(field, ""))
            if guard.search(normal[field]):
                hits.append(Hit(guard.name, field))
                break
    return tuple(hits)


def _words(*alternatives: str) -> str:
    return "(?:" + "|".join(alternatives) + ")"


# The shipped set (docs/guardrails.md, "The default guards").  Each flags
# wording that mail for a person rarely has and an injected instruction often
# does; tests/test_guards.py holds a message each one must catch and a close
# one it must not.
_OVERRIDE_VERB = _words("ignore", "disregard", "forget", "override", "bypass", "skip")
_EARLIER = _words("previous", "prior", "above", "earlier", "preceding", "original",
                  "existing", "system", "these", "those")
_RULES = _words("instructions?", "prompts?", "directions?", "directives?", "rules",
                "guidelines", "guardrails", "restrictions", "policies", "programming")
_REQUEST = _words("send", "share", "give", "provide", "paste", "attach", "e-?mail",
                  "forward", "reply with", "tell me", "reveal", "show me", "upload",
                  "read out")
_SECRETS = _words(r"api[ _-]?keys?", r"access[ _-]?tokens?", r"auth(?:entication)?[ _-]?tokens?",
                  r"secret[ _-]?keys?", "secrets", "passwords?", "passphrases?", "passcodes?",
                  r"private[ _-]?keys?", r"ssh[ _-]?keys?", "credentials",
                  r"(?:2fa|mfa|otp|verification) codes?", r"recovery codes?", "seed phrase")
_ALL_MAIL = _words("e-?mails?", "messages?", "mail", "inbox", "correspondence")

DEFAULT_GUARDS = (
    Guard("instruction-override", "|".join((
        rf"\b{_OVERRIDE_VERB}\s+(?:(?:all|any|of|the|your|my)\s+)*{_EARLIER}\s+(?:\w+\s+)?{_RULES}",
        rf"\b{_OVERRIDE_VERB}\s+(?:all|any)\s+(?:of\s+)?(?:(?:the|your|my)\s+)?{_RULES}",
        rf"\b{_OVERRIDE_VERB}\s+your\s+{_RULES}",
        r"\bnew\s+instructions?\s*:",
        r"\bfrom\s+now\s+on,?\s+you\s+(?:are|will|must|shall|should)\b",
        r"\byou\s+are\s+now\s+(?:an?\s+|in\s+\w+\s+mode|acting\s+as|no\s+longer|free|"
        r"jailbroken|unrestricted|DAN\b)",
        r"\b(?:pretend|act)\s+(?:to\s+be\s+|as\s+if\s+|as\s+|that\s+)?(?:you\s+(?:are|were)\s+)?"
        r"(?:an?\s+)?(?:unrestricted|unfiltered|uncensored|jailbroken)\b",
    ))),
    Guard("system-prompt", "|".join((
        r"(?m)^\s*#*\s*(?:system|assistant|developer)\s*(?:prompt|message)?\s*:\s*"
        r"(?:you|ignore|disregard|forget|new|from\s+now)\b",
        r"\bsystem\s+prompt\s*:",
        r"<\|?(?:im_start|im_end|system|endoftext)\|?>",
        r"\[/?(?:INST|SYS|SYSTEM)\]",
        r"<</?SYS>>",
        r"</?system(?:[_-]prompt)?>",
        r"\b(?:reveal|print|repeat|show|output)\s+(?:me\s+)?(?:your|the)\s+(?:system\s+prompt|"
        r"initial\s+instructions|hidden\s+instructions)",
    ))),
    Guard("credential-request", "|".join((
        rf"\b{_REQUEST}\W+(?:[\w'-]+\W+){{0,6}}?{_SECRETS}\b",
        rf"\bwhat\s+(?:is|are)\s+(?:your|the)\s+(?:[\w'-]+\s+){{0,3}}?{_SECRETS}\b",
    ))),
    Guard("secret-files",
          r"~/\.(?:ssh|gnupg|aws|config|netrc)\b|/\.ssh/|\bid_(?:rsa|dsa|ecdsa|ed25519)\b"
          r"|\bauthorized_keys\b|/etc/(?:passwd|shadow|sudoers)\b|\.aws/credentials\b"
          r"|\.env\s+file\b"),
    Guard("run-command", "|".join((
        r"\b(?:run|execute|exec)\s+(?:this|the\s+following|these|the)\s+(?:shell\s+|bash\s+|"
        r"terminal\s+)?(?:commands?|scripts?|code|one-liner)\b",
        r"\b(?:curl|wget)\s+[^|\n]{1,300}\|\s*(?:sudo\s+)?(?:ba|z|da)?sh\b",
        r"\brm\s+-(?:rf|fr)\b",
        r"\b(?:bash|sh|zsh|powershell|python3?)\s+-c\s",
        r"\bopen\s+(?:a|the|your)\s+(?:terminal|shell)\b",
    ))),
    Guard("tool-call", "|".join((
        r"\b(?:call|invoke)\s+(?:the\s+|your\s+)?[\w.-]+\s+(?:tool|function)\b",
        r"\b(?:use|run)\s+(?:the\s+|your\s+)?(?:mcp|e-?mail|mail|aimx|send)[\w.-]*\s+tool\b",
        r"\b(?:email_send|email_reply|hook_create|hook_delete|mailbox_create|mailbox_delete)\b",
        r"\b(?:tool_call|function_call|tool_use)\b",
    ))),
    Guard("forward-all-mail", "|".join((
        rf"\b(?:forward|redirect|copy|bcc|cc|send|export)\s+(?:me\s+)?(?:all|every|each|any)\s+"
        rf"(?:of\s+)?(?:your|the|my|our|incoming|future|new|these|those)?\s*(?:\w+\s+)?{_ALL_MAIL}",
        r"\b(?:set\s+up|create|add|configure|enable)\s+(?:an?\s+)?(?:auto(?:matic)?[ -]?)?"
        r"forward(?:ing)?\s+(?:rule|filter|to)\b",
        r"\bauto[ -]?forward",
        r"\bforward\s+(?:them|it|everything)\s+(?:all\s+)?to\s+\S+@",
    ))),
)
