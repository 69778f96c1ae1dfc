"""``kgexplain report`` (a static site) and ``kgexplain serve`` (the same pages, live and read-only)."""

from __future__ import annotations

import ipaddress
import socket

import click

from kgexplain.errors import UsageError
from kgexplain.store import StoreSpec
from kgexplain.web.report import write_report

from .context import progress_of
from .options import output_options, store_options
from .output import emit_rows


@click.command("report")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the site (replaced).")
@click.option("--run", "runs", multiple=True, help="Only these runs (repeatable; default: every complete run).")
@click.option("--max-patterns", type=click.IntRange(min=1), default=200, show_default=True,
              help="Pattern pages per layer and run, best first (others show as plain text).")  # fmt: skip
@store_options
@output_options
@click.pass_context
def report_command(
    ctx: click.Context, out: str, runs: tuple[str, ...], max_patterns: int, store: StoreSpec, fmt: str
) -> None:
    """Write a self-contained static site of the store's runs to OUT: index, run, pattern, image and path pages
    with a JSON twin each, files copied in. It opens from the file system (OUT/index.html) with no server and no
    network; zip it to send it."""
    with store.read() as db:
        res = write_report(db, out, list(runs) or None, max_patterns, progress=progress_of(ctx))
    emit_rows(res.rows(), fmt)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (localhost by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port to listen on (0: any free one, printed).")  # fmt: skip
@store_options
def serve_command(host: str, port: int, store: StoreSpec) -> None:
    """Browse the store live and read-only: the report's pages, each with its JSON twin (the same path with .json,
    e.g. /index.json); /runs/<id>.html?page=N pages through large runs. Ctrl-C stops."""
    import uvicorn  # lazy: only the server needs it

    from kgexplain.web.serve import make_app  # lazy: Starlette loads only for serve

    with store.read() as db:  # a missing or unreadable store fails here, in one line, before binding
        sock = listen(host, port)
        where = f"[{host}]" if ":" in host else host
        click.echo(f"kgexplain: serving {db.url} read-only at http://{where}:{sock.getsockname()[1]}/ (Ctrl-C stops)")
        if not ipaddress.ip_address(sock.getsockname()[0]).is_loopback:
            click.echo(
                f"note: --host {host} lets anyone who can reach this machine read the store's pages and images "
                "(there is no login); the default, 127.0.0.1, keeps them to this machine",
                err=True,
            )
        app = make_app(db, reopen=store.read)  # pages follow builds and deletes made while serving
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port for the server, or one error line when the port is taken or the address is not
    this machine's (uvicorn itself would log it and exit with status 3)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            sock.close()
            raise
    except OSError as e:
        reason = e.strerror or str(e)
        raise UsageError(
            f"cannot serve on {host}:{port}: {reason}",
            hint="pass another --port (0 picks a free one), or a --host address of this machine",
        ) from None
    return sock
