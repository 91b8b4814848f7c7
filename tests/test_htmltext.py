"""HTML-only mail bodies to Markdown."""

import re

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.htmltext import html_to_markdown as convert

_TAG = re.compile(r"<[a-zA-Z/!?]")


class ConvertTests(SynchronousTestCase):
    def test_heading_and_paragraph(self):
        """Headings become ATX headings, paragraphs are separated by a blank line."""
        self.assertEqual(
            convert("<html><body><h1>Hello</h1><p>World</p></body></html>"), "# Hello\n\nWorld\n"
        )

    def test_breaks_and_lists(self):
        """br is a line break; ul and ol items are bullets and numbers."""
        self.assertEqual(
            convert("<p>a<br>b<br><br>c</p><ul><li>x<li>y</ul><ol><li>one</li><li>two</li></ol>"),
            "a\nb\n\nc\n\n- x\n- y\n\n1. one\n2. two\n",
        )

    def test_links(self):
        """Links keep their target; javascript: and self-named links are plain text."""
        self.assertEqual(
            convert("<a href='http://x'>link</a> <a href=\"javascript:alert(1)\">js</a> "
                    "<a href=http://y>http://y</a>"),
            "[link](http://x) js http://y\n",
        )

    def test_pre_and_quote(self):
        """pre keeps its whitespace in a fence; blockquote lines are prefixed."""
        self.assertEqual(
            convert("<pre>  code\n    more</pre><blockquote><p>quoted</p><p>two</p></blockquote>"),
            "```\n  code\n    more\n```\n\n> quoted\n>\n> two\n",
        )

    def test_hidden_content_dropped(self):
        """style, script, comments and title are not visible text; entities decode."""
        self.assertEqual(
            convert("<style>p{}</style><script>alert('<p>')</script><!-- c --><title>T</title>"
                    "text &amp; &lt;tag&gt; &nbsp;x"),
            "text & <tag> x\n",
        )

    def test_emphasis_and_images(self):
        """b/i become emphasis (empty ones vanish); images show their alt text."""
        self.assertEqual(
            convert("<b>bold</b> <i></i><img src=a.png alt='pic'> <img src=b.png>"),
            "**bold** ![pic](a.png)\n",
        )

    def test_quoted_gt_in_attribute(self):
        """A '>' inside a quoted attribute value does not end the tag."""
        self.assertEqual(convert("<div title='a > b'>x</div>"), "x\n")

    def test_stray_angle_brackets(self):
        """A '<' that starts no tag is text."""
        self.assertEqual(convert("a < b > c"), "a < b > c\n")

    def test_unclosed(self):
        """Unclosed tags and a truncated tag at the end never leave markup behind."""
        self.assertEqual(convert("<p unclosed"), "")
        self.assertEqual(convert("<a href='x'>unclosed <b>nest"), "[unclosed **nest**](x)\n")

    def test_hostile_inputs_leave_no_tags(self):
        """Deep nesting, unterminated quotes and comments, and lone brackets stay tag-free."""
        for source in ("<b>" * 20000 + "x", '<a "' * 20000, "<ul><li>" * 5000 + "z",
                       "<" * 20000, "<a" * 20000, "<!--" * 5000, "<script>" * 1000,
                       "<div " + "x='>'" * 5000 + ">y"):
            out = convert(source)
            self.assertIsNone(_TAG.search(out), source[:10])

    def test_empty(self):
        """Nothing visible converts to an empty body."""
        self.assertEqual(convert("<html><head><title>t</title></head><body></body></html>"), "")
