"""`cocoon chain`: the local TON network many processes share."""
from __future__ import annotations

import logging
from pathlib import Path

import click


@click.group()
def chain() -> None:
    """The local chain server: one embedded chain for many processes and ordinary TON tools."""


@chain.command()
@click.option("--state", "state", type=click.Path(file_okay=False, path_type=Path), default=Path(".cocoon/chain"),
              show_default=True, help="Folder of the chain's state (SQLite); a restart resumes from it.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8081, show_default=True, help="Port to listen on.")
@click.option("--checkpoint-interval", type=click.FloatRange(0.1, 3600), default=2.0, show_default=True,
              help="Seconds between checkpoints of the accounts (every acknowledged message is durable at once; "
                   "checkpoints only shorten the replay after a crash).")
def serve(state: Path, host: str, port: int, checkpoint_interval: float) -> None:
    """Serve the embedded chain over a toncenter-v2-compatible HTTP API.

    Tools and services reach it with `--network local` (or its URL): POST /api/v2/jsonRPC and
    /api/v2/METHOD as on toncenter, plus development endpoints /dev/fund, /dev/advance and
    /dev/now. Messages are processed in arrival order; a send is acknowledged once it is on disk.
    """
    from node.chain.server import Settings, serve as run
    from node.chain.store import StoreError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        run(Settings(state=state, host=host, port=port, checkpoint_interval=checkpoint_interval),
            print_fn=lambda m: click.echo(m, err=True))
    except StoreError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
