"""Tests for L{aimx.core.threadid}."""

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.threadid import message_ids, thread_id


class MessageIdsTests(SynchronousTestCase):
    """L{message_ids} extracts ids from header values."""

    def test_tokens_in_order(self) -> None:
        """Every bracketed token is returned in order, without brackets."""
        self.assertEqual(
            message_ids("<a@x> <b@y>\r\n <c@z>"), ["a@x", "b@y", "c@z"]
        )

    def test_bare_value(self) -> None:
        """A value without brackets counts as one id."""
        self.assertEqual(message_ids("  bare-id  "), ["bare-id"])

    def test_unbalanced_bracket(self) -> None:
        """A lone bracket is stripped from a bare value."""
        self.assertEqual(message_ids("<half@x"), ["half@x"])

    def test_empty(self) -> None:
        """None, empty, blank and C{<>} values hold no ids."""
        for value in (None, "", "   ", "<>", "< >"):
            self.assertEqual(message_ids(value), [], value)

    def test_inner_whitespace_and_comments(self) -> None:
        """Spaces inside brackets are trimmed; text outside tokens is ignored."""
        self.assertEqual(message_ids("< a@x > (comment) <b@y>"), ["a@x", "b@y"])


class ThreadIdTests(SynchronousTestCase):
    """L{thread_id} hashes the thread root (docs/concepts.md, "Threads")."""

    def test_own_message_id(self) -> None:
        """A lone message hashes its own Message-ID."""
        self.assertEqual(
            thread_id("<abc123@example.com>", None, None), "5e8ba5eb6cc1fd88"
        )

    def test_own_message_id_unbracketed(self) -> None:
        """The bracket-free form gives the same id."""
        self.assertEqual(thread_id("abc123@example.com", None, None), "5e8ba5eb6cc1fd88")

    def test_in_reply_to_without_references(self) -> None:
        """Without References the In-Reply-To id is the root."""
        self.assertEqual(
            thread_id("<own@x>", "<parent@example.com>", None), "ee9cd2a3ead6d5cc"
        )

    def test_two_replies_share_id(self) -> None:
        """Two replies to one parent share the thread id."""
        self.assertEqual(
            thread_id("<r1@x>", "<parent@example.com>", None),
            thread_id("<r2@x>", "<parent@example.com>", None),
        )

    def test_first_reference_wins(self) -> None:
        """The first References id is the root, not In-Reply-To."""
        self.assertEqual(
            thread_id(
                "<own@x>",
                "<second@example.com>",
                "<first@example.com> <second@example.com>",
            ),
            "f7faa8d2b759b8e4",
        )

    def test_chain(self) -> None:
        """Every message of a three-message chain shares one id."""
        a = thread_id("<root@example.com>", None, None)
        b = thread_id("<b@x>", "<root@example.com>", None)
        c = thread_id("<c@x>", "<b@x>", "<root@example.com> <b@x>")
        self.assertEqual({a, b, c}, {"7988c5c046ac0d33"})

    def test_bare_message_id(self) -> None:
        """A bare Message-ID is hashed as is."""
        self.assertEqual(thread_id("bare-id", None, None), "8733b60e09888782")

    def test_empty(self) -> None:
        """No ids at all hashes the empty string."""
        self.assertEqual(thread_id("", None, None), "e3b0c44298fc1c14")
        self.assertEqual(thread_id(None, "", "  "), "e3b0c44298fc1c14")

    def test_format(self) -> None:
        """The id is 16 lowercase hex characters."""
        value = thread_id("<X@Example.COM>", None, None)
        self.assertRegex(value, "^[0-9a-f]{16}$")
