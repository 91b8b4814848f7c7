"""The search query language, its FTS5 expression, date bounds and snippets."""

import sqlite3

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.mailquery import (
    MAX_QUERY,
    MAX_TERMS,
    QueryError,
    Term,
    match_expression,
    parse_bound,
    parse_query,
    snippet,
    timestamp_us,
)


class ParseQueryTests(SynchronousTestCase):
    def test_words_prefixes_phrases(self):
        """Words, `word*` and quoted phrases are terms; an unclosed quote runs to the end."""
        self.assertEqual(parse_query('report  quart* "next week" "open end'), [
            Term("report"), Term("quart", prefix=True), Term("next week", phrase=True),
            Term("open end", phrase=True),
        ])

    def test_nothing_searchable_is_dropped(self):
        """Terms without a letter or digit are dropped (they would match nothing)."""
        self.assertEqual(parse_query('" - * () "" \x00'), [])

    def test_bounds(self):
        """Queries past the length or term limits are refused with a reason."""
        self.assertRaises(QueryError, parse_query, "a" * (MAX_QUERY + 1))
        self.assertRaises(QueryError, parse_query, " ".join(["w"] * (MAX_TERMS + 1)))


class MatchExpressionTests(SynchronousTestCase):
    def test_every_term_quoted(self):
        """Each term is an FTS5 string (quotes doubled), prefixes starred, ANDed."""
        self.assertEqual(match_expression(parse_query('a OR b NEAR( x"y "q""r" p*')),
                         '"a" AND "OR" AND "b" AND "NEAR(" AND "x" AND "y" AND "q" '
                         'AND "r" AND "p"*')

    def test_hostile_queries_never_error(self):
        """No query a caller can type makes FTS5 fail or match more than its words."""
        con = sqlite3.connect(":memory:")
        con.execute("CREATE VIRTUAL TABLE f USING fts5(a, content='', "
                    "tokenize='unicode61 remove_diacritics 2')")
        con.execute("INSERT INTO f(rowid, a) VALUES (1, 'alpha beta'), (2, 'gamma')")
        for query in ('"', '""', 'NEAR(', 'alpha OR gamma', 'a:b', '^alpha', '(alpha',
                      'alpha)', '{a b}', 'alpha NOT gamma', '+', 'AND', 'x\x00y', '*alpha',
                      'al*pha', '"alpha', "don't", 'ALPHA*', 'é'):
            expression = match_expression(parse_query(query))
            if expression:
                con.execute("SELECT rowid FROM f WHERE f MATCH ?", (expression,)).fetchall()
        found = con.execute("SELECT rowid FROM f WHERE f MATCH ?",
                            (match_expression(parse_query("alpha OR gamma")),)).fetchall()
        self.assertEqual(found, [])


class BoundTests(SynchronousTestCase):
    def test_dates_cover_the_day(self):
        """A date is its UTC day: since at its start, until (exclusive) at the next."""
        self.assertEqual(parse_bound("since", "2025-06-01", False), 1748736000 * 10**6)
        self.assertEqual(parse_bound("until", "2025-06-01", True), 1748822400 * 10**6)

    def test_date_times(self):
        """Date-times keep their offset (none: UTC); until is inclusive of the instant."""
        self.assertEqual(parse_bound("since", "2025-06-01T02:00:00+02:00", False),
                         1748736000 * 10**6)
        self.assertEqual(parse_bound("since", "2025-06-01t00:00:00z", False), 1748736000 * 10**6)
        self.assertEqual(parse_bound("since", "2025-06-01 00:00:00", False), 1748736000 * 10**6)
        self.assertEqual(parse_bound("until", "2025-06-01T00:00:00Z", True),
                         1748736000 * 10**6 + 1)

    def test_refused(self):
        """Anything else names the argument."""
        for text in ("yesterday", "2025-13-01", "2025-06-01T25:00", "", "2025-06-01X10:00"):
            e = self.assertRaises(QueryError, parse_bound, "since", text, False)
            self.assertIn("since:", str(e))

    def test_timestamp(self):
        """A frontmatter date with a zone becomes microseconds; anything else None."""
        self.assertEqual(timestamp_us("2025-06-01T00:00:00Z"), 1748736000 * 10**6)
        self.assertIsNone(timestamp_us("2025-06-01T00:00:00"))
        self.assertIsNone(timestamp_us(5))


class SnippetTests(SynchronousTestCase):
    def test_around_the_first_match(self):
        """The snippet shows the first matching word with some context, cut ends marked."""
        body = "intro " * 60 + "the quarterly   report\nis here " + "tail " * 60
        text = snippet(body, parse_query("report"), width=60)
        self.assertIn("quarterly report is here", text)
        self.assertTrue(text.startswith("…") and text.endswith("…"))
        self.assertLessEqual(len(text), 62)

    def test_no_match_in_body(self):
        """Without a match in the body, its beginning."""
        self.assertEqual(snippet("Short body.", parse_query("subjectword")), "Short body.")
