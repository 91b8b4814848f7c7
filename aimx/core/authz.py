"""Who may act on a mailbox (L0, pure; docs/security.md, "The control socket"), and
who may decide on its held mail (L{may_decide}; docs/guardrails.md).

Root passes everything; anyone else must be the mailbox owner, compared by uid
(an owner that does not resolve makes the mailbox inactive, i.e. absent).  The
decision carries the rich reason for the log; callers answer the wire with the
opaque texts (C{not authorized}, "does not exist").
"""

import attrs

from aimx.core.config import MailboxConfig

ACCEPT = "accept"
ROOT_BYPASS = "root_bypass"
REJECT = "reject"


@attrs.frozen
class Decision:
    """The outcome of L{authorize}.

    @ivar decision: C{accept}, C{root_bypass} or C{reject}.
    @ivar reason: why a rejection happened (log only, never on the wire).
    @ivar no_such_mailbox: the rejection is "no such mailbox" (absent, or its owner
        does not resolve) rather than "not the owner".
    """

    decision: str
    reason: str = ""
    no_such_mailbox: bool = False

    @property
    def allowed(self) -> bool:
        return self.decision != REJECT


def authorize(
    caller_uid: int,
    caller_name: str | None,
    mailbox: MailboxConfig | None,
    owner_uid: int | None,
) -> Decision:
    """May C{caller_uid} act on C{mailbox}?

    @param caller_name: the caller's username, or C{None} when it has none.
    @param mailbox: the configured mailbox, or C{None} when there is none.
    @param owner_uid: the uid of C{mailbox.owner}, or C{None} when it does not resolve.
    """
    if caller_uid == 0:
        return Decision(ROOT_BYPASS)
    if mailbox is None:
        return Decision(REJECT, "no such mailbox", no_such_mailbox=True)
    if owner_uid is None:
        return Decision(
            REJECT,
            f"mailbox '{mailbox.name}' owner '{mailbox.owner}' does not resolve; "
            "mailbox inactive",
            no_such_mailbox=True,
        )
    if owner_uid == caller_uid:
        return Decision(ACCEPT)
    if caller_name is None:
        who = f"caller uid {caller_uid} has no resolvable username;"
    else:
        who = f"caller '{caller_name}' is"
    return Decision(
        REJECT,
        f"{who} not the owner of mailbox '{mailbox.name}' (owner: '{mailbox.owner}')",
    )


def visible(caller_uid: int, owner_uid: int | None) -> bool:
    """Whether a listing row owned by C{owner_uid} is shown to C{caller_uid}."""
    return caller_uid == 0 or (owner_uid is not None and owner_uid == caller_uid)


def may_decide(caller_uid: int, owner_uid: int | None, approver: bool) -> Decision:
    """May C{caller_uid} approve or reject a held message of a mailbox (docs/guardrails.md)?

    Root and the members of the C{[approval] approvers} group may, but never the
    mailbox's owner, root included: the agent runs as the owner.

    @param owner_uid: the uid of the mailbox's owner, or C{None} when it does not resolve.
    @param approver: the caller is in the approvers group.
    """
    if owner_uid is not None and caller_uid == owner_uid:
        return Decision(REJECT, "the mailbox's owner never approves or rejects its own mail")
    if caller_uid == 0:
        return Decision(ROOT_BYPASS)
    if approver:
        return Decision(ACCEPT)
    return Decision(REJECT, "neither root nor in the approvers group")
