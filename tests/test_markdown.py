"""Markdown to inline-styled HTML; the cost of hostile input is
measured in tests.integration.test_markdown_cost."""

from twisted.trial.unittest import SynchronousTestCase

from aimx.core.markdown import MARKDOWN_CAP, merge_style, render

# The module's style table, copied again here so a typo in the module shows up.
BODY = (
    "font-family: -apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, 'Helvetica Neue', "
    "Arial, sans-serif; line-height: 1.55; max-width: 720px; margin: 0 auto; padding: 16px; "
    "color: #1f2328;"
)
H1 = "font-size: 1.75em; margin: 1.2em 0 0.5em; line-height: 1.25;"
H2 = "font-size: 1.4em; margin: 1.1em 0 0.5em; line-height: 1.3;"
H3 = "font-size: 1.2em; margin: 1em 0 0.4em; line-height: 1.3;"
H4 = "font-size: 1.05em; margin: 1em 0 0.4em; line-height: 1.3;"
P = "margin: 0.6em 0;"
LIST = "margin: 0.6em 0; padding-left: 1.4em;"
LI = "margin: 0.2em 0;"
A = "color: #0b66c2; text-decoration: none;"
CODE = (
    "font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; "
    "background: #f3f4f6; padding: 0.1em 0.3em; border-radius: 3px; font-size: 0.95em;"
)
PRE = (
    "font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; "
    "background: #f3f4f6; padding: 12px; border-radius: 5px; overflow-x: auto; "
    "font-size: 0.95em; line-height: 1.45;"
)
QUOTE = "border-left: 3px solid #d0d7de; padding: 0 0.9em; color: #57606a; margin: 0.6em 0;"
TABLE = "border-collapse: collapse; margin: 0.8em 0; border: 1px solid #d0d7de;"
TH = "border: 1px solid #d0d7de; padding: 6px 10px; background: #f6f8fa; text-align: left;"
TD = "border: 1px solid #d0d7de; padding: 6px 10px;"
HR = "border: 0; border-top: 1px solid #d0d7de; margin: 1.4em 0;"


def styled(tag: str, style: str) -> str:
    return f'<{tag} style="{style}"'


class BlockTests(SynchronousTestCase):
    def test_heading_and_paragraph(self):
        """Headings get a GitHub-style id and the spec style; so do paragraphs."""
        html = render("# Hello\n\nWorld")
        self.assertIn("<h1", html)
        self.assertIn(">Hello</h1>", html)
        self.assertIn(f'<h1 id="hello" style="{H1}">Hello</h1>', html)
        self.assertIn(f"{styled('p', P)}>World</p>", html)

    def test_heading_levels(self):
        """h2-h4 have their own styles; h5 and h6 are not in the table."""
        html = render("## Report\n\n### Three\n\n#### Four\n\n##### Five\n\n###### Six")
        self.assertIn("<h2", html)
        self.assertIn(f'<h2 id="report" style="{H2}">Report</h2>', html)
        self.assertIn(f'<h3 id="three" style="{H3}">', html)
        self.assertIn(f'<h4 id="four" style="{H4}">', html)
        self.assertIn('<h5 id="five">Five</h5>', html)
        self.assertIn('<h6 id="six">Six</h6>', html)

    def test_heading_ids(self):
        """Ids are slugs without a prefix; repeats are numbered as on GitHub."""
        html = render("# Hello, World!\n\n# Hello, World!\n\n## Hello World\n\n# `x` y")
        self.assertIn('<h1 id="hello-world" ', html)
        self.assertIn('<h1 id="hello-world-1" ', html)
        self.assertIn('<h2 id="hello-world-2" ', html)
        self.assertIn('<h1 id="x-y" ', html)

    def test_table(self):
        """GFM tables: every part is present and th/td/table are styled."""
        html = render("| a | b |\n|---|---|\n| 1 | 2 |\n")
        for part in ("<thead", "<tbody", "<tr"):
            self.assertIn(part, html)
        self.assertIn(styled("table", TABLE), html)
        self.assertIn(f"{styled('th', TH)}>a</th>", html)
        self.assertIn(f"{styled('td', TD)}>2</td>", html)

    def test_aligned_cells_keep_their_style(self):
        """An alignment style stays first; the defaults follow after '; '."""
        html = render("| a |\n|--:|\n| 1 |\n")
        self.assertIn(f'<th style="text-align:right; {TH}">a</th>', html)
        self.assertIn(f'<td style="text-align:right; {TD}">1</td>', html)

    def test_lists(self):
        """ul, ol and li carry their styles."""
        html = render("- a\n- b\n\n1. one\n")
        self.assertIn(f"{styled('ul', LIST)}>", html)
        self.assertIn(f"{styled('ol', LIST)}>", html)
        self.assertIn(f"{styled('li', LI)}>a</li>", html)

    def test_task_list(self):
        """[ ] and [x] items become disabled checkboxes."""
        html = render("- [ ] todo\n- [x] done\n")
        self.assertIn('class="contains-task-list"', html)
        self.assertEqual(html.count('type="checkbox"'), 2)
        self.assertEqual(html.count("checked"), 1)
        self.assertEqual(html.count('disabled=""'), 2)
        self.assertIn(f'<li class="task-list-item" style="{LI}">', html)
        self.assertNotIn("[ ]", html)

    def test_blockquote_and_rule(self):
        """blockquote and hr are styled."""
        html = render("> quoted\n\n---\n")
        self.assertIn(f"{styled('blockquote', QUOTE)}>", html)
        self.assertIn(f"{styled('p', P)}>quoted</p>", html)
        self.assertIn(f"{styled('hr', HR)} />", html)

    def test_code(self):
        """Inline code gets the code style; fenced and indented code get the pre
        style on <pre> and the code style on the <code> inside it."""
        html = render("Use `ls -l` here.\n\n```sh\necho <hi>\n```\n\n    indented\n")
        self.assertIn(f"{styled('code', CODE)}>ls -l</code>", html)
        self.assertIn(
            f'{styled("pre", PRE)}><code style="{CODE}" class="language-sh">echo &lt;hi&gt;\n'
            "</code></pre>",
            html,
        )
        self.assertIn(f"{styled('pre', PRE)}>{styled('code', CODE)}>indented\n</code></pre>", html)

    def test_footnote(self):
        """Footnote references, the rule, list, items and back links are styled."""
        html = render("Text[^1].\n\n[^1]: The note.\n")
        self.assertIn(f'<sup class="footnote-ref"><a style="{A}" href="#fn1" id="fnref1">', html)
        self.assertIn(f'{styled("hr", HR)} class="footnotes-sep"', html)
        self.assertIn(f'{styled("ol", LIST)} class="footnotes-list"', html)
        self.assertIn(f'{styled("li", LI)} id="fn1" class="footnote-item">', html)
        self.assertIn(f'The note. <a style="{A}" href="#fnref1" class="footnote-backref">', html)


class InlineTests(SynchronousTestCase):
    def test_link(self):
        """Links keep their href and get the link style."""
        html = render("[x](https://example.com)")
        self.assertIn(f'<a href="https://example.com" style="{A}">x</a>', html)

    def test_unsafe_link(self):
        """markdown-it's URL validation stays on: no javascript: href."""
        html = render("[x](javascript:alert(1)) <javascript:alert(2)>")
        self.assertNotIn("<a", html)
        self.assertNotIn("href", html)

    def test_raw_html_is_dropped(self):
        """Raw HTML is dropped, as CommonMark renderers do in safe mode: no live
        script, no bold from <b>, and no tag shown as text either."""
        html = render("<script>alert(1)</script>\n\nsay <b>x</b> and <img src=x onerror=y> ok")
        self.assertNotIn("<script", html)
        self.assertNotIn("script&gt;", html)
        self.assertNotIn("alert", html)
        self.assertNotIn("<b>", html)
        self.assertNotIn("&lt;b&gt;", html)
        self.assertNotIn("<img", html)
        self.assertNotIn("onerror", html)
        self.assertIn(f"{styled('p', P)}>say x and  ok</p>", html)

    def test_raw_html_block_dropped(self):
        """An HTML block (comment, div) is dropped whole; the text after it stays."""
        html = render("<!-- note -->\n\n<div onclick=x>\nin\n</div>\n\nafter")
        self.assertNotIn("note", html)
        self.assertNotIn("onclick", html)
        self.assertNotIn("&lt;", html)
        self.assertIn(">after</p>", html)

    def test_less_than_text_kept(self):
        """A '<' that starts no tag stays text, escaped."""
        html = render("a < b and 1<2")
        self.assertIn("a &lt; b and 1&lt;2", html)

    def test_strikethrough(self):
        """Double and single tildes strike through."""
        html = render("~~gone~~ and ~also~")
        self.assertIn("<s>gone</s>", html)
        self.assertIn("<s>also</s>", html)

    def test_angle_autolink(self):
        """CommonMark <...> autolinks are styled links."""
        html = render("<https://x.example/a>")
        self.assertIn(f'<a href="https://x.example/a" style="{A}">https://x.example/a</a>', html)

    def test_bare_autolinks(self):
        """Bare URLs, www. hosts and e-mail addresses become links; trailing
        punctuation and an unbalanced ')' are left out."""
        html = render(
            "See https://a.example/x. Or (www.b.example/y_(z)), "
            "mail me@c.example! Not a@b.c- nor x://y."
        )
        self.assertIn(f'<a href="https://a.example/x" style="{A}">https://a.example/x</a>. ', html)
        self.assertIn(
            f'(<a href="http://www.b.example/y_(z)" style="{A}">www.b.example/y_(z)</a>), ', html
        )
        self.assertIn(f'<a href="mailto:me@c.example" style="{A}">me@c.example</a>!', html)
        self.assertEqual(html.count("<a "), 3)

    def test_no_autolink_inside_links_or_code(self):
        """Text already in a link, and code, is left alone."""
        html = render("[see https://a.example](https://b.example) `https://c.example`")
        self.assertEqual(html.count("<a "), 1)
        self.assertIn(">see https://a.example</a>", html)
        self.assertIn(">https://c.example</code>", html)

    def test_signature_with_link(self):
        """A configured signature renders its hard break and a linked URL."""
        html = render("Hi.\n\nThe support team.  \nhttps://support.example.org")
        self.assertIn("The support team.<br />\n", html)
        self.assertIn('<a href="https://support.example.org"', html)


class FragmentTests(SynchronousTestCase):
    def test_fragment(self):
        """One body-styled div wraps everything; no document tags."""
        html = render("# Hi\n\ntext")
        self.assertTrue(html.startswith(f'<div style="{BODY}">\n<h1'), html[:80])
        self.assertTrue(html.endswith("</p>\n</div>\n"), html[-40:])
        self.assertEqual(html.count(BODY), 1)
        self.assertEqual(html.count("<div"), 1)
        for tag in ("<html", "<body", "<style", "<head"):
            self.assertNotIn(tag, html)

    def test_empty(self):
        """Empty source still gives the wrapper."""
        self.assertEqual(render(""), f'<div style="{BODY}">\n</div>\n')

    def test_deterministic(self):
        """The same source renders to the same bytes."""
        source = "# T\n\n- [x] a\n\n| a |\n|---|\n| b |\n\nx[^n] https://e.example\n\n[^n]: n\n"
        self.assertEqual(render(source), render(source))

    def test_merge_style(self):
        """Existing declarations come first, then the defaults after '; '."""
        self.assertEqual(merge_style(None, P), P)
        self.assertEqual(merge_style("", P), P)
        self.assertEqual(merge_style("color: red", P), f"color: red; {P}")
        self.assertEqual(merge_style("color: red; ", P), f"color: red; {P}")

    def test_cap(self):
        """The cap is 5 MiB."""
        self.assertEqual(MARKDOWN_CAP, 5_242_880)
