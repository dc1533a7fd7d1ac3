"""`microcloud`: the command-line client. Every error is one line `Error: ...`, exit 1."""

from __future__ import annotations

import http.client
import sys

import click

from microcloud.client import Client
from microcloud.commands import COMMANDS
from microcloudd.api.errors import MicrocloudError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except MicrocloudError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(1)
        except (ConnectionError, http.client.HTTPException, TimeoutError) as e:
            # The daemon went away (or stopped answering) in the middle of a request.
            click.echo(f"Error: lost the connection to microcloudd mid-request ({type(e).__name__}: {e}); "
                       "see `microcloud status` and the daemon's log", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Error: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="microcloud")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Manage a microcloud: virtual machines on Ceph and OVN, from one daemon."""
    ctx.obj = _LazyClient()


class _LazyClient:
    """The client is made on first use, so `--help` works without a daemon."""

    _client: Client | None = None

    def __getattr__(self, name: str) -> object:
        if self._client is None:
            self._client = Client()
        return getattr(self._client, name)


for command in COMMANDS:
    cli.add_command(command)


def main() -> None:
    cli(prog_name="microcloud")


if __name__ == "__main__":
    main()
