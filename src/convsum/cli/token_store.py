"""The API's token store: convsum tokens import, add, list, revoke."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from convsum.cli.base import CONTEXT, cli


@cli.group(context_settings=CONTEXT)
def tokens() -> None:
    """Manage the Bearer tokens that the served API accepts, stored in OUT/tokens.

    Only each token's SHA-256 is stored. The server reads OUT/tokens/owners/ on every request,
    so a change reaches a running server without a reload. No run, rebuild or sync touches the
    store.
    """


_tokens_out = click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))


def _check_owner(_ctx: click.Context, _param: click.Parameter, owner: str) -> str:
    from convsum.errors import TokenError
    from convsum.tokens import check_owner

    try:
        return check_owner(owner)
    except TokenError as exc:
        raise click.BadParameter(str(exc)) from exc


@tokens.command("import", context_settings=CONTEXT)
@_tokens_out
def tokens_import(out: Path) -> None:
    """Store the tokens of OWNER<TAB>TOKEN lines read from standard input.

    The gateway's existing API keys keep working. Blank lines and lines starting with # are
    skipped; a token already stored for the same owner is skipped. A malformed line, or a token
    stored for another owner, is an error naming the line, and nothing is imported.
    """
    from convsum.tokens import import_tokens

    lines = (raw.decode("utf-8", "surrogateescape") for raw in sys.stdin.buffer)
    added = import_tokens(out, lines)
    click.echo(f"convsum: imported {added} token{'' if added == 1 else 's'}", err=True)


@tokens.command("add", context_settings=CONTEXT)
@_tokens_out
@click.argument("owner", callback=_check_owner)
def tokens_add(out: Path, owner: str) -> None:
    """Make a new token for OWNER and print it on standard output, this once only.

    Only its hash is stored: a token that is lost cannot be shown again; revoke it and add
    another.
    """
    from convsum.tokens import add_token

    info, token = add_token(out, owner)
    click.echo(token)
    click.echo(f"convsum: added {info.id} for owner {_shown(info.owner)}", err=True)


@tokens.command("list", context_settings=CONTEXT)
@_tokens_out
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("text", "json")),
    default="text",
    show_default=True,
    help="One line per token (id, owner, created, revoked TIME), or a JSON array.",
)
def tokens_list(out: Path, fmt: str) -> None:
    """List the stored tokens, revoked ones included, oldest first (never a token or its hash)."""
    from dataclasses import asdict

    from convsum.tokens import list_tokens

    infos = list_tokens(out)
    if fmt == "json":
        import orjson

        document = [asdict(info) for info in infos]
        sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        return
    for info in infos:
        revoked = f"\trevoked {info.revoked}" if info.revoked else ""
        click.echo(f"{info.id}\t{_shown(info.owner)}\t{info.created}{revoked}")


@tokens.command("revoke", context_settings=CONTEXT)
@_tokens_out
@click.argument("token_id", metavar="ID")
def tokens_revoke(out: Path, token_id: str) -> None:
    """Revoke the token ID (see `convsum tokens list`); the server refuses it from then on."""
    from convsum.tokens import revoke_token

    info = revoke_token(out, token_id)
    click.echo(f"convsum: {info.id} of owner {_shown(info.owner)} revoked {info.revoked}", err=True)


def _shown(owner: str) -> str:
    """Return an owner as printed on one line: as it is, or quoted when it holds a control
    character or is not the same once stripped."""
    import orjson

    plain = owner.isprintable() and owner == owner.strip()
    return owner if plain else orjson.dumps(owner).decode()
