"""A compromised proxy for the gateway's tests: it holds the real proxy's operator key and image (so
its RA-TLS attestation and registration check out), forwards every request to the real proxy, and
changes the answers on their way back:

``content``  the answer's text is changed after the worker signed it (non-streaming: the message;
             streaming: the first content delta);
``resign``   the receipt is re-signed by another key (same statement, another signature);
``cut``      a paid stream ends after its second chunk, without a receipt (the proxy goes on, cancels
             the worker and bills what was delivered); a request with a zero voucher (one asking only
             for the record of its request id) passes untouched.

    python -m tests.client.relay --listen PORT --upstream HOST:PORT --dev-root DIR --measurements FILE \
        --operator-key-file F --owner ADDR --mode content|resign|cut
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pytoniq_core import Cell

from node.openai import headers as H
from node.openai import sse
from node.tee.providers import SimulatedProvider
from node.tee.ratls import Identity, PeerVerifier, RaTlsConnector, RaTlsSite
from node.tee.registry_source import RegistrySnapshot, SnapshotSource
from node.tee.simulated import DevRoot, SimulatedTdx, load_measurements
from node.tee.verify import Policy
from wrappers import stake as S

HOP = {"host", "content-length", "transfer-encoding", "connection"}


def resign(cocoon: dict) -> None:
    st = S.SignedStatement.from_cell(Cell.one_from_boc(base64.b64decode(cocoon["receipt"])))
    forged = S.sign_statement(Ed25519PrivateKey.generate(), st.statement)
    cocoon["receipt"] = base64.b64encode(forged.to_cell().to_boc()).decode()


def main() -> None:
    a = argparse.ArgumentParser()
    for opt in ("--listen", "--upstream", "--dev-root", "--measurements", "--operator-key-file", "--owner", "--mode"):
        a.add_argument(opt, required=True)
    args = a.parse_args()
    root = DevRoot.load(args.dev_root)
    tee = SimulatedTdx(root, load_measurements(args.measurements))
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(open(args.operator_key_file).read().strip()))
    ident = Identity.create(SimulatedProvider(tee), role="proxy", operator=args.owner, key=key)
    snap = SnapshotSource.fixed(RegistrySnapshot(is_test=True))
    mode = args.mode

    async def forward(request: web.Request) -> web.StreamResponse:
        http: aiohttp.ClientSession = request.app["http"]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        body = await request.read()
        async with http.request(request.method, request.path_qs, data=body or None, headers=headers) as up:
            ctype = up.headers.get("Content-Type", "")
            if "text/event-stream" not in ctype:
                data = await up.read()
                try:
                    doc = json.loads(data)
                except ValueError:
                    doc = None
                if isinstance(doc, dict) and "cocoon" in doc and up.status == 200:
                    if mode == "content":
                        ch = doc["choices"][0]
                        if "message" in ch:
                            ch["message"]["content"] = (ch["message"].get("content") or "") + " (edited)"
                        else:
                            ch["text"] = ch.get("text", "") + " (edited)"
                    elif mode == "resign":
                        resign(doc["cocoon"])
                    data = json.dumps(doc).encode()
                out = web.Response(status=up.status, body=data,
                                   headers={k: v for k, v in up.headers.items() if k.lower() not in HOP})
                return out
            out = web.StreamResponse(status=up.status, headers=sse.HEADERS)
            await out.prepare(request)
            dec = sse.SSEDecoder()
            edited = False
            cut = mode == "cut" and not request.headers.get(H.VOUCHER, "").startswith("0:")
            sent = 0
            async for chunk in up.content.iter_any():
                for payload in dec.feed(chunk):
                    obj = sse.parse_event(payload)
                    if obj == sse.DONE:
                        await out.write(sse.DONE_EVENT)
                        continue
                    if cut and sent == 2:
                        return out
                    sent += 1
                    if mode == "content" and not edited and obj.get("choices"):
                        d = obj["choices"][0].get("delta") or {}
                        if d.get("content"):
                            d["content"] += " (edited)"
                            edited = True
                        elif "text" in obj["choices"][0] and obj["choices"][0]["text"]:
                            obj["choices"][0]["text"] += " (edited)"
                            edited = True
                    if mode == "resign" and "cocoon" in obj:
                        resign(obj["cocoon"])
                    await out.write(sse.event(obj))
            return out

    async def on_start(app: web.Application):
        verifier = PeerVerifier(Policy("proxy", dev_trust=root.trust()),
                                SnapshotSource.fixed(RegistrySnapshot(proxy_image_hashes=[], is_test=True)))
        # the relay trusts its upstream by address (it is the test's own proxy); it still speaks RA-TLS
        verifier.verify_certificate = _accept  # type: ignore[method-assign]
        conn = RaTlsConnector(Identity.create(None), verifier)
        app["http"] = aiohttp.ClientSession(base_url=f"https://{args.upstream}", connector=conn)
        yield
        await app["http"].close()

    app = web.Application(client_max_size=8 << 20)
    app.cleanup_ctx.append(on_start)
    app.router.add_route("*", "/{tail:.*}", forward)

    async def run() -> None:
        runner = web.AppRunner(app)
        await runner.setup()
        site = RaTlsSite(runner, "127.0.0.1", int(args.listen), identity=ident,
                         verifier=PeerVerifier(Policy("client"), snap))
        await site.start()
        print(f"relay on {args.listen} -> {args.upstream} ({mode})", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


async def _accept(data):
    from node.tee.verify import Check, Verdict

    return Verdict(checks=[Check("upstream", True, "trusted by address")])


if __name__ == "__main__":
    main()
