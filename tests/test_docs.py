"""The user documentation in docs/ against the code it describes.

Each reference page names what the code offers: every CLI verb and flag
(docs/cli.md, from the argparse parser and the twistd options), every C{AIMX_*}
variable a hook gets (docs/hooks.md, from L{aimx.core.hookspec.environment}),
every MCP tool and parameter (docs/mcp.md, from the server's own tool list) and
every config.toml key (docs/configuration.md, whose example must load).  A
verb, variable, tool or key added without its documentation fails here.
"""

import argparse
import asyncio
import os
import re

import attrs
from mcp import Client
from twisted.trial.unittest import SynchronousTestCase

from aimx import service
from aimx.cli.arguments import parser as _parser
from aimx.core import config, events, hookspec
from aimx.mcp import server
from aimx.testing.fakes import FakeAsyncControlClient
from aimx.verifier import service as verifier

DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")


def page(name: str) -> str:
    """The text of C{docs/<name>}."""
    with open(os.path.join(DOCS, name), encoding="utf-8") as f:
        return f.read()


def mentions(text: str, word: str) -> bool:
    """Whether C{word} occurs in C{text} as a whole token (not inside a longer name)."""
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def section(text: str, heading: str) -> str:
    """The text under the Markdown heading C{heading} up to the next heading of its level
    or above; C{""} when there is no such heading."""
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, re.M)
    if match is None:
        return ""
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, match.end())
    return text[match.end():end.start() if end else len(text)]


def verbs(parser: argparse.ArgumentParser, path=("aimx",)):
    """C{(command words, parser)} for every (sub)command, aliases left out."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen = set()
            for name, sub in action.choices.items():
                if id(sub) in seen:
                    continue  # an alias (mailbox, hook) shares its verb's parser
                seen.add(id(sub))
                yield from verbs(sub, path + (name,))


#: Accepted by every command and documented once, with the global options.
GLOBAL = ("--data-dir", "--config-dir")


def flags(parser: argparse.ArgumentParser, skip=()):
    """The option strings of a parser, help and C{skip} aside."""
    for action in parser._actions:
        if not isinstance(action, argparse._HelpAction):
            yield from (flag for flag in action.option_strings if flag not in skip)


def twistd_flags(options: type) -> list[str]:
    """The C{--long} options of a C{usage.Options} class."""
    names = [p[0] for p in getattr(options, "optParameters", [])]
    names += [f[0] for f in getattr(options, "optFlags", [])]
    names += [m.removeprefix("opt_").replace("_", "-") for m in vars(options)
              if m.startswith("opt_")]
    return [f"--{name}" for name in names]


class CliDocTests(SynchronousTestCase):
    """docs/cli.md names every verb and flag of the parser."""

    def setUp(self):
        self.text = page("cli.md")

    def test_every_verb(self):
        """Each command path, e.g. C{aimx mail search}, appears in docs/cli.md."""
        missing = [" ".join(path) for path, _ in verbs(_parser())
                   if " ".join(path) not in self.text]
        self.assertEqual(missing, [])

    def test_every_flag(self):
        """Each option of each command appears in its command's part of docs/cli.md."""
        missing = []
        for path, parser in verbs(_parser()):
            if len(path) == 1:
                where, skip = section(self.text, "Global options and exit codes"), ()
            else:
                where, skip = section(self.text, "aimx " + path[1]), GLOBAL
            missing += [f"{' '.join(path)} {flag}" for flag in flags(parser, skip)
                        if not mentions(where, flag)]
        self.assertEqual(missing, [])

    def test_daemon_and_verifier_flags(self):
        """The options of C{twistd aimx} (C{aimx serve}) and C{twistd aimx-verifier}."""
        serve = section(self.text, "aimx serve")
        verify = section(self.text, "The verifier")
        missing = [flag for flag in twistd_flags(service.Options) if not mentions(serve, flag)]
        missing += [flag for flag in twistd_flags(verifier.Options)
                    if not mentions(verify, flag)]
        self.assertEqual(missing, [])

    def test_section_finder(self):
        """A flag documented only under another verb does not count for this one."""
        text = "## aimx a\n\n`--x`\n\n## aimx b\n\n`--y`\n"
        self.assertTrue(mentions(section(text, "aimx a"), "--x"))
        self.assertFalse(mentions(section(text, "aimx a"), "--y"))
        self.assertFalse(mentions("`--xy`", "--x"))


def _event(event: str) -> hookspec.HookEvent:
    mailbox = config.MailboxConfig(name="support", address="support@a.example", owner="bot")
    return hookspec.HookEvent(
        event, mailbox, "/d/x.md", "x", "a@b.example", "c@a.example", "s", "<m@b>",
        "2025-01-01T00:00:00Z", trusted="true" if event == events.ON_RECEIVE else None,
        send_status=None if event == events.ON_RECEIVE else "delivered",
    )


class HookDocTests(SynchronousTestCase):
    """docs/hooks.md documents exactly the C{AIMX_*} variables a hook gets."""

    def setUp(self):
        hook = config.make_hook("on_receive", ["/bin/true"])
        self.variables = set()
        for event in (events.ON_RECEIVE, events.AFTER_SEND):
            env = hookspec.environment(_event(event), hook, {"PATH": "/bin", "HOME": "/"})
            self.variables |= {key for key in env if key.startswith("AIMX_")}
        self.table = section(page("hooks.md"), "Environment")

    def test_every_variable_documented(self):
        """Each variable the code sets has a row in the Environment table."""
        self.assertGreater(len(self.variables), 10)
        missing = sorted(v for v in self.variables if f"| `{v}` |" not in self.table)
        self.assertEqual(missing, [])

    def test_no_variable_invented(self):
        """Each variable in the table is one the code sets."""
        documented = set(re.findall(r"^\| `(AIMX_\w+)` \|", self.table, re.M))
        self.assertEqual(documented - self.variables, set())


class McpDocTests(SynchronousTestCase):
    """docs/mcp.md has a section per tool naming each of its parameters."""

    def setUp(self):
        async def listed():
            async with Client(server.build(FakeAsyncControlClient({}))) as client:
                return (await client.list_tools()).tools

        self.tools = {t.name: t for t in asyncio.run(listed())}
        self.text = page("mcp.md")

    def test_every_tool_and_parameter(self):
        """Each tool has a C{### <name>} section; each parameter is named in it or, for
        a tool documented as "same parameters", in the section before."""
        missing = []
        for name, tool in self.tools.items():
            body = section(self.text, name)
            if not body:
                missing.append(name)
                continue
            if "Same parameters" in body:
                previous = re.findall(r"^### (\w+)", self.text.split(f"### {name}")[0], re.M)
                body = section(self.text, previous[-1])
            missing += [f"{name}.{p}" for p in tool.input_schema.get("properties", {})
                        if f"`{p}`" not in body]
        self.assertEqual(missing, [])

    def test_no_tool_invented(self):
        """Every tool section names a tool the server offers."""
        headings = set(re.findall(r"^### (\w+)\s*$", self.text, re.M))
        self.assertEqual(headings - set(self.tools), set())


class ConfigDocTests(SynchronousTestCase):
    """docs/configuration.md documents every key and its example loads."""

    def setUp(self):
        self.text = page("configuration.md")

    def test_every_key(self):
        """Top-level, mailbox and hook keys each have a row."""
        internal = {"mailboxes", "file_data_dir", "release_manifest_url"}
        keys = [f.name for f in attrs.fields(config.Config)
                if f.init and f.name not in internal]
        keys += [f.name for f in attrs.fields(config.MailboxConfig) if f.name not in ("name", "hooks")]
        keys += list(config._HOOK_KEYS)
        missing = [key for key in keys if not re.search(rf"^\| `{key}` \|", self.text, re.M)]
        self.assertEqual(missing, [])
        self.assertIn("`[upgrade] release_manifest_url`", self.text)

    def test_examples_load(self):
        """Every complete TOML example (one with a domain) loads as aimx loads config.toml."""
        examples = [block for block in re.findall(r"```toml\n(.*?)```", self.text, re.S)
                    if block.startswith("domain =")]
        self.assertTrue(examples)
        for block in examples:
            loaded, _ = config.load_text(block, "docs/configuration.md")
            self.assertTrue(loaded.mailboxes)


#: Where code comments and docstrings live, relative to the repository.
CODE = ("aimx", "twisted", "contrib", "tests", "setup.cfg", "aimx.tac")
REPO = os.path.dirname(DOCS)
#: A citation of the functional spec or the style guide the code was first written
#: from; neither is in the repository, so a reader cannot follow it (the pattern is built so that this
#: file does not match itself).
SPEC = re.compile(
    "spec" + r"/|\bspec (?:README|§|[a-z-]+\.md)|\b" + "STY" + r"LE\.md"
    r"|(?<![\w/-])(?:inbound|outbound|frontmatter|trust-and-auth|control-socket|daemon"
    r"|setup-and-ops|agents|security|config|cli|mcp|hooks)(?:\.md)? §"
)
CITED = re.compile(r"\bdocs/([\w.-]+\.md)")


def code_lines():
    """C{(path, line number, line)} of every text file under L{CODE} but this one."""
    for top in CODE:
        path = os.path.join(REPO, top)
        files = [path] if os.path.isfile(path) else (
            os.path.join(folder, name)
            for folder, dirs, names in os.walk(path)
            if "__pycache__" not in folder and "_trial_temp" not in folder
            for name in names
        )
        for name in files:
            if os.path.abspath(name) == os.path.abspath(__file__):
                continue  # the patterns below are written out in this file
            try:
                with open(name, encoding="utf-8") as f:
                    lines = f.read().splitlines()
            except (UnicodeDecodeError, OSError):
                continue
            for number, line in enumerate(lines, 1):
                yield os.path.relpath(name, REPO), number, line


class CitationTests(SynchronousTestCase):
    """Code comments cite docs/ pages (or RFCs) that exist, never the spec folder."""

    def test_no_spec_citation(self):
        """Nothing under aimx/, twisted/, contrib/ or tests/ cites the spec folder."""
        found = [f"{path}:{number}: {line.strip()}" for path, number, line in code_lines()
                 if SPEC.search(line)]
        self.assertEqual(found, [])

    def test_cited_pages_exist(self):
        """Every docs/<page>.md the code names is in docs/."""
        cited = {(path, page) for path, _, line in code_lines() for page in CITED.findall(line)}
        self.assertTrue(cited)
        missing = sorted(f"{path}: docs/{page}" for path, page in cited
                         if not os.path.exists(os.path.join(DOCS, page)))
        self.assertEqual(missing, [])

    def test_patterns(self):
        """The patterns catch the citation forms the spec folder was cited with."""
        for text in ("(" + "spec" + "/hooks.md §3)", "config.md §3 step 10",
                     "spec README, \"Body\"", "spec §9", "trust-and-auth §5.2",
                     "(" + "STY" + "LE.md, \"Bound everything\")"):
            self.assertTrue(SPEC.search(text), text)
        for text in ("docs/hooks.md", "RFC 5321 §4.5.3.2", "addr_spec", "HTML §13.2.6"):
            self.assertFalse(SPEC.search(text), text)
        self.assertEqual(CITED.findall("see docs/x-y.md, \"A\""), ["x-y.md"])


class DesignDocTests(SynchronousTestCase):
    """docs/design.md names modules that exist and the layers tests/test_map.py enforces."""

    def setUp(self):
        self.text = page("design.md")

    def test_layer_table_is_the_stack(self):
        """Each layer row of the table lists exactly the aimx units of that layer."""
        from tests.test_map import STACK

        for layer, units in STACK:
            row = re.search(rf"^\| L{layer} [^|]*\|([^|]*)\|", self.text, re.M)
            self.assertIsNotNone(row, f"L{layer}")
            named = re.findall(r"`(aimx/[\w/]+?)(?:\.py)?`", row.group(1))
            self.assertEqual(sorted(n.replace("/", ".") for n in named), sorted(units))

    def test_named_files_exist(self):
        """Every C{.py} file the page names exists (a bare name somewhere in the package)."""
        every = {os.path.relpath(os.path.join(folder, name), REPO)
                 for top in ("aimx", "tests", "bench", "twisted")
                 for folder, _, names in os.walk(os.path.join(REPO, top)) for name in names}
        missing = []
        for name in set(re.findall(r"`([\w/]+\.py)`", self.text)):
            if not any(path == name or path.endswith("/" + name) for path in every):
                missing.append(name)
        self.assertEqual(sorted(missing), [])
