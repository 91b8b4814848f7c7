"""``aimx dkim-keygen``: create the DKIM key pair and print its DNS record (L3).

Keys go to C{<config_dir>/dkim/}; an existing pair is kept unless C{--force}
(docs/cli.md, "aimx dkim-keygen"). C{--selector} only names the printed record.
"""

import os
import sys

from aimx.cli.term import Terminal
from aimx.errors import AimxError
from aimx.store import configfile, keys

_YELLOW, _BOLD = "33", "1"


def main(args) -> int:
    return run(args, Terminal(sys.stdout, sys.stderr, sys.stdin, os.environ))


def run(args, term: Terminal) -> int:
    """Generate (or keep) the key pair, then print the TXT record; the exit code."""
    try:
        config, _ = configfile.load(args.config_dir, data_dir_override=args.data_dir)
        private, public = keys.dkim_paths(args.config_dir)
        kept = os.path.exists(private) and not args.force
        if kept:
            print(f"{term.style('Warning:', _YELLOW)} DKIM keys already exist. "
                  "Use --force to overwrite.", file=term.err)
        else:
            _generate(args.config_dir, args.force)
        record = _record(args.config_dir, public)
    except AimxError as e:
        term.error(str(e))
        return 1
    if not kept:
        term.success("DKIM keypair generated successfully.")
        term.say()
    term.say("Add this DNS TXT record:")
    term.say("  " + term.style(f"{args.selector}._domainkey.{config.domain}", _BOLD))
    term.say(f"  {record}")
    term.say()
    return 0


def _generate(config_dir: str, force: bool) -> None:
    directory = os.path.dirname(keys.dkim_paths(config_dir)[0])
    try:
        keys.generate_dkim_key(config_dir, force=force)
    except PermissionError:
        raise AimxError(
            f"Permission denied writing to {directory}. Run `sudo aimx dkim-keygen`, or "
            "set `AIMX_CONFIG_DIR=<writable-path>` and rerun `aimx dkim-keygen` for "
            "development."
        ) from None
    except OSError as e:
        raise AimxError(f"cannot write the DKIM keys in {directory}: {e.strerror or e}") from None


def _record(config_dir: str, public: str) -> str:
    try:
        return "v=DKIM1; k=rsa; p=" + keys.local_public_key_b64(config_dir)
    except (OSError, ValueError):
        raise AimxError(
            f"DKIM public key {public} is missing or unreadable. Run "
            "`aimx dkim-keygen --force` to create a new key pair."
        ) from None
