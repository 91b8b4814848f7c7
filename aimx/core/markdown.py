"""Markdown bodies to inline-styled HTML for outbound mail (L0, pure).

CommonMark plus the GFM extensions (tables,
strikethrough, autolinks, task lists, footnotes, heading ids), rendered by
markdown-it-py.  Raw HTML in the source is dropped, as CommonMark renderers do
in safe mode (cmark, comrak): parsed as HTML, so that it neither runs nor shows
up as escaped tags in the text, and rendered as nothing.  Mail clients drop C{<style>} blocks, so every element of the
table below carries its own C{style} attribute and the fragment is wrapped in
one styled C{<div>} standing in for C{<body>}.  Heading ids and bare-URL
autolinks are our own linear core rules, and task lists are markdown-it's own:
the mdit plugins for all three are quadratic on hostile input.  Pure and
thread-safe; run it off the reactor (dense Markdown takes ~2.5 s per MiB).
"""

import re

from markdown_it import MarkdownIt
from markdown_it.token import Token
from mdit_py_plugins.anchors.index import slugify
from mdit_py_plugins.footnote import footnote_plugin

MARKDOWN_CAP = 5 * 1024 * 1024  # bytes of source after the signature (docs/mcp.md)

_MONO = "font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; "
_LIST = "margin: 0.6em 0; padding-left: 1.4em;"
_CELL = "border: 1px solid #d0d7de; padding: 6px 10px;"

# The inline styles of every element aimx renders.
BODY_STYLE = (
    "font-family: -apple-system, BlinkMacSystemFont, 'Segoe UI', Roboto, "
    "'Helvetica Neue', Arial, sans-serif; line-height: 1.55; max-width: 720px; "
    "margin: 0 auto; padding: 16px; color: #1f2328;"
)
STYLES = {
    "h1": "font-size: 1.75em; margin: 1.2em 0 0.5em; line-height: 1.25;",
    "h2": "font-size: 1.4em; margin: 1.1em 0 0.5em; line-height: 1.3;",
    "h3": "font-size: 1.2em; margin: 1em 0 0.4em; line-height: 1.3;",
    "h4": "font-size: 1.05em; margin: 1em 0 0.4em; line-height: 1.3;",
    "p": "margin: 0.6em 0;",
    "ul": _LIST,
    "ol": _LIST,
    "li": "margin: 0.2em 0;",
    "a": "color: #0b66c2; text-decoration: none;",
    "code": _MONO + "background: #f3f4f6; padding: 0.1em 0.3em; border-radius: 3px; "
    "font-size: 0.95em;",
    "pre": _MONO + "background: #f3f4f6; padding: 12px; border-radius: 5px; "
    "overflow-x: auto; font-size: 0.95em; line-height: 1.45;",
    "blockquote": "border-left: 3px solid #d0d7de; padding: 0 0.9em; color: #57606a; "
    "margin: 0.6em 0;",
    "table": "border-collapse: collapse; margin: 0.8em 0; border: 1px solid #d0d7de;",
    "th": _CELL + " background: #f6f8fa; text-align: left;",
    "td": _CELL,
    "hr": "border: 0; border-top: 1px solid #d0d7de; margin: 1.4em 0;",
}

# GFM extended autolinks, simplified: bare http(s):// and www. URLs, and e-mail
# addresses.  Each alternative starts only at a boundary, so a scan is linear.
_AUTOLINK = re.compile(
    r"(?<![^\s*_~(])(?P<url>(?:https?://|www\.)[\w-][^\s<]*)"
    r"|(?<![A-Za-z0-9_.+-])(?P<email>[A-Za-z0-9_.+-]+@[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+)"
)
_URL_HEAD = re.compile(r"(?:https?://|www\.)[\w-]")
_URL_TRAIL = "?!.,:*_~'\""  # never ends a URL (GFM 6.9)


def merge_style(existing: str | None, default: str) -> str:
    """The C{style} value of an element: its own declarations, then the defaults.

    @param existing: the element's current C{style} value, if any.
    @param default: our inline style for the element's tag.
    @return: C{default} alone, or C{existing} and C{default} joined by C{"; "}.
    """
    existing = (existing or "").rstrip("; \t")
    return f"{existing}; {default}" if existing else default


def _heading_ids(state) -> None:
    # GitHub-style slugs, repeats get -1, -2...; the anchors plugin restarts the
    # count at -1 for every repeat (quadratic in repeated headings).
    used: set[str] = set()
    suffix: dict[str, int] = {}
    for token, inline in zip(state.tokens, state.tokens[1:]):
        if token.type == "heading_open":
            base = slugify("".join(
                c.content for c in inline.children or () if c.type in ("text", "code_inline")
            ))
            n = suffix.get(base, 0)
            slug = f"{base}-{n}" if n else base
            while slug in used:
                n += 1
                slug = f"{base}-{n}"
            suffix[base] = n + 1
            used.add(slug)
            token.attrSet("id", slug)


def _autolinked(md, token) -> list[Token]:
    nodes, last, text, level = [], 0, token.content, token.level
    for match in _AUTOLINK.finditer(text):
        found, start = match.group(), match.start()
        if match.lastgroup == "email":
            href = "" if found[-1] in "-_" else "mailto:" + found
        else:
            # Trailing punctuation and unbalanced ')' stay outside the link.
            end, unclosed = len(found), found.count(")") - found.count("(")
            while end and (found[end - 1] in _URL_TRAIL or found[end - 1] == ")" and unclosed > 0):
                unclosed -= found[end - 1] == ")"
                end -= 1
            found = found[:end]
            href = found if found.startswith("http") else "http://" + found
            href = href if _URL_HEAD.match(found) else ""
        if href:
            href = md.normalizeLink(href)
            nodes += [
                Token("text", "", 0, content=text[last:start], level=level),
                Token("link_open", "a", 1, attrs={"href": href}, level=level, info="auto"),
                Token("text", "", 0, content=md.normalizeLinkText(found), level=level + 1),
                Token("link_close", "a", -1, level=level, info="auto"),
            ]
            last = start + len(found)
    return nodes and nodes + [Token("text", "", 0, content=text[last:], level=level)]


def _autolink(state) -> None:
    # markdown-it's linkify needs linkify-it-py and splices one list per link;
    # mdit's gfm_autolink regex-searches all pending text at every ':'.  Both
    # are superlinear, so rebuild each inline token's children in one pass.
    for block in state.tokens:
        if block.type != "inline" or not block.children:
            continue
        children, depth = [], 0
        for token in block.children:
            depth += (token.type == "link_open") - (token.type == "link_close")
            text = token.content
            hit = token.type == "text" and not depth and ("@" in text or "://" in text
                                                           or "www." in text)
            children.extend(hit and _autolinked(state.md, token) or (token,))
        block.children = children


def _style_tokens(state) -> None:
    # Every opening or self-closing token of a listed tag, inline ones too.
    # Fenced and indented code are tag "code", so the <code> inside a <pre>
    # gets the code style as well ("every element of the kinds below").
    for token in state.tokens:
        for each in (token, *(token.children or ())):
            default = STYLES.get(each.tag)
            if default is not None and each.nesting >= 0:
                each.attrSet("style", merge_style(each.attrGet("style"), default))


def _code_block(self, tokens, idx, options, env) -> str:
    # The stock fence renderer puts the token's attrs on <code>; <pre> is bare.
    return f'<pre style="{STYLES["pre"]}"' + self.fence(tokens, idx, options, env)[4:]


def _omitted(self, tokens, idx, options, env) -> str:
    # Raw HTML: dropped, never emitted live and never shown escaped.
    return ""


def _restyled(rule, tags):
    # Footnote markup is fixed strings, not attributed tokens: style it there.
    def render(self, tokens, idx, options, env) -> str:
        html = rule(tokens, idx, options, env)
        for tag in tags:
            html = html.replace(f"<{tag} ", f'<{tag} style="{STYLES[tag]}" ')
        return html

    return render


def _build() -> MarkdownIt:
    # Task lists and single-tilde strikethrough are markdown-it-py >= 4.1 options;
    # mdit's tasklists plugin is quadratic in the items of one list.
    # Raw HTML is parsed (html=True), then rendered as nothing (_omitted).
    options = {"html": True, "tasklists": True, "strikethrough_single_tilde": True}
    md = MarkdownIt("commonmark", options).enable(["table", "strikethrough"])
    md.use(footnote_plugin, inline=False)
    for name, rule in (("ids", _heading_ids), ("autolink", _autolink), ("style", _style_tokens)):
        md.core.ruler.push("aimx_" + name, rule)
    md.add_render_rule("html_block", _omitted)
    md.add_render_rule("html_inline", _omitted)
    md.add_render_rule("fence", _code_block)
    md.add_render_rule("code_block", _code_block)
    for name, tags in (("footnote_ref", ("a",)), ("footnote_block_open", ("hr", "ol")),
                       ("footnote_open", ("li",)), ("footnote_anchor", ("a",))):
        md.add_render_rule(name, _restyled(md.renderer.rules[name], tags))
    return md


_MD = _build()


def render(source: str) -> str:
    """Markdown (CommonMark + GFM) to an HTML fragment with inline styles.

    The caller enforces L{MARKDOWN_CAP} first.  Same input, same bytes.

    @param source: the Markdown body, signature included.
    @return: one C{<div>} carrying the body style around the rendered HTML;
        no C{<html>}, C{<body>} or C{<style>}.
    """
    return f'<div style="{BODY_STYLE}">\n{_MD.render(source)}</div>\n'
