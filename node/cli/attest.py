"""``cocoon attest``: check an attestation in one command.

``cocoon attest verify TARGET`` where TARGET is a quote file, an RA-TLS certificate
(PEM or DER) or a live ``host:port``. It prints the measurements, the image hash, the TCB
status and every check with pass/fail (``--json`` for machines), always shows what it could
parse, and exits 1 if any check failed (2 for usage errors). Development helpers
(``dev-root``, ``serve-simulated``) run the simulated TEE, which only test registries accept.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import re
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

import click

from node.tee.verify import TCB_STATUSES, Verdict

FIELD_LABELS = {
    "mr_td": "MRTD",
    "mr_config_id": "MRCONFIGID",
    "mr_owner": "MROWNER",
    "mr_owner_config": "MROWNERCONFIG",
    "rt_mr0": "RTMR0",
    "rt_mr1": "RTMR1",
    "rt_mr2": "RTMR2",
    "rt_mr3": "RTMR3",
    "report_data": "REPORTDATA",
    "mr_seam": "MRSEAM",
    "mr_signer_seam": "MRSIGNERSEAM",
    "seam_attributes": "SEAMATTRIBUTES",
    "td_attributes": "TDATTRIBUTES",
    "xfam": "XFAM",
    "tee_tcb_svn": "TEE_TCB_SVN",
}
_HOSTPORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.\-]+):(\d{1,5})$")


class UsageProblem(click.ClickException):
    exit_code = 2


def parse_time(value: str | None) -> int | None:
    """ISO 8601 (``2025-06-25``, ``2025-06-25T00:00:00Z``) or unix seconds."""
    if value is None:
        return None
    v = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", v):
        return int(float(v))
    try:
        t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise UsageProblem(f"--time {value!r} is neither ISO 8601 nor unix seconds") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp())


def _fetch_peer_certificate(host: str, port: int, timeout: float = 10.0) -> tuple[bytes, str]:
    """Connect, finish the TLS 1.3 handshake, return the server's certificate (DER)."""
    from node.tee.ratls import Identity, client_context

    ctx = client_context(Identity.create(None, role="client"))
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout) as raw:
            with ctx.wrap_socket(raw, server_hostname=None) as s:
                der = s.getpeercert(binary_form=True)
                version = s.version() or "TLS"
    except (OSError, ssl.SSLError) as e:
        raise click.ClickException(f"cannot fetch the certificate of {host}:{port}: {e}") from None
    if not der:
        raise click.ClickException(f"{host}:{port} presented no certificate")
    return der, version


def _looks_like_certificate(data: bytes) -> bool:
    if data.lstrip().startswith(b"-----BEGIN CERTIFICATE"):
        return True
    if data[:1] == b"\x30":  # DER SEQUENCE; a TDX quote starts with version 4/5 (LE u16)
        from node.tee.certs import CertificateError, read_certificate

        try:
            read_certificate(data)
            return True
        except CertificateError:
            return False
    return False


def _read_claims(value: str | None) -> bytes | None:
    if value is None:
        return None
    p = Path(value)
    if p.exists():
        return p.read_bytes()
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise UsageProblem("--claims must be a file or hex") from None


async def _run(
    target: str,
    *,
    collateral_file: str | None,
    pccs_url: str | None,
    now: int | None,
    role: str | None,
    allow_images: tuple[str, ...],
    snapshot_file: str | None,
    accept_tcb: tuple[str, ...],
    dev_trust_file: str | None,
    claims_value: str | None,
) -> tuple[dict[str, Any], Verdict]:
    from node.tee.collateral import CollateralError, FileCollateral, PccsCollateral
    from node.tee.ratls import PeerVerifier
    from node.tee.registry_source import RegistrySnapshot, SnapshotSource
    from node.tee.simulated import DevTrust
    from node.tee.verify import DEFAULT_ACCEPTED_TCB, Policy, verify_quote
    from node.tee import certs, claims as claims_mod

    source: dict[str, Any] = {"target": target}
    path = Path(target)
    m = _HOSTPORT.match(target)
    if path.exists():
        try:
            data = path.read_bytes()
        except OSError as e:
            raise click.ClickException(f"cannot read {target}: {e.strerror}") from None
        kind = "certificate" if _looks_like_certificate(data) else "quote"
        source.update(kind=kind, file=str(path))
    elif m:
        if not 0 < int(m.group(2)) < 65536:
            raise UsageProblem(f"{target!r}: the port {int(m.group(2))} is not between 1 and 65535")
        data, version = await asyncio.to_thread(_fetch_peer_certificate, m.group(1), int(m.group(2)))
        kind = "certificate"
        source.update(kind="certificate", endpoint=target, tls=version)
    else:
        raise UsageProblem(f"{target!r} is neither an existing file nor host:port")

    dev = None
    if dev_trust_file:
        try:
            dev = DevTrust.load(dev_trust_file)
        except (OSError, ValueError) as e:
            raise UsageProblem(f"--allow-simulated: {e}") from None

    claims_bytes = _read_claims(claims_value)
    if kind == "certificate":
        try:
            info = certs.read_certificate(data)
            claims_bytes = info.claims
        except certs.CertificateError:
            pass
    if role is None and claims_bytes:
        try:
            role = claims_mod.decode(claims_bytes).role
        except claims_mod.ClaimsError:
            role = None
    source["role_assumed"] = role is None
    role = role or "worker"
    source["role"] = role

    snapshot = None
    if snapshot_file:
        try:
            snapshot = RegistrySnapshot.load(snapshot_file)
        except (OSError, ValueError, json.JSONDecodeError) as e:
            raise UsageProblem(f"--registry-snapshot: {e}") from None
    if allow_images:
        try:
            extra = frozenset(bytes.fromhex(h) for h in allow_images)
        except ValueError:
            raise UsageProblem("--allow-image takes 64 hex digits") from None
        if any(len(h) != 32 for h in extra):
            raise UsageProblem("--allow-image takes 64 hex digits (32 bytes)")
        base = snapshot or RegistrySnapshot(is_test=dev is not None)
        images = {"worker": base.worker_image_hashes, "proxy": base.proxy_image_hashes}
        images[role if role in images else "worker"] = images.get(role, frozenset()) | extra
        snapshot = RegistrySnapshot(images["worker"], images["proxy"], base.model_hashes, base.is_test, base.version)

    policy = Policy(role, frozenset(accept_tcb) or DEFAULT_ACCEPTED_TCB, dev)
    provider = None
    if collateral_file:
        provider = FileCollateral(collateral_file)
    elif pccs_url:
        provider = PccsCollateral(pccs_url, cache_dir=os.environ.get("COCOON_COLLATERAL_CACHE"))

    if kind == "certificate":
        clock = (lambda: float(now)) if now is not None else None
        verifier = PeerVerifier(policy, SnapshotSource.fixed(snapshot) if snapshot else None, provider, None)
        if clock is not None:
            verifier.clock = clock
        verdict = await verifier.verify_certificate(data)
        return source, verdict

    collateral, err = None, None
    if provider is not None:
        try:
            collateral = await provider.get(data)
        except CollateralError as e:
            err = str(e)
    else:
        err = "no collateral: pass --collateral FILE or --pccs-url URL"
    verdict = verify_quote(
        data, policy=policy, snapshot=snapshot, collateral=collateral, collateral_error=err,
        now=now, claims_bytes=claims_bytes,
    )
    return source, verdict


def _human(source: dict[str, Any], v: Verdict, now: int | None) -> str:
    out = []
    where = source.get("endpoint") or source.get("file")
    out.append(f"{source['kind'].capitalize()} from {where}" + (f" ({source['tls']})" if source.get("tls") else ""))
    if v.simulated:
        out.append("Environment:  SIMULATED TEE — development root, accepted only by test registries")
    elif v.quote is not None:
        out.append("Environment:  Intel TDX")
    when = dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat() if now is not None else "now"
    out.append(f"Verified at:  {when}")
    out.append(f"Peer role:    {source['role']}" + ("  (assumed; pass --role)" if source.get("role_assumed") else ""))
    q = v.quote
    if q is not None:
        out.append(f"Quote:        TDX v{q.version}, sha256 {q.quote_hash.hex()}")
        out.append("Measurements:")
        for name, hexval in q.measurements.as_hex().items():
            out.append(f"  {FIELD_LABELS.get(name, name):<15}{hexval}")
        out.append(f"Image hash:   {q.image_hash.hex()}")
    else:
        out.append("Quote:        (none could be parsed)")
    out.append(f"TCB status:   {v.tcb_status or 'unknown'}" + (f"  advisories: {', '.join(v.advisory_ids)}" if v.advisory_ids else ""))
    if v.claims is not None:
        c = v.claims
        out.append(f"Claims:       v{c.version} key {c.public_key.hex()}" + (f" role {c.role}" if c.role else ""))
    out.append("Checks:")
    width = max(len(c.name) for c in v.checks) if v.checks else 10
    for c in v.checks:
        out.append(f"  [{c.label:<4}] {c.name:<{width}}  {c.detail}")
    failed = v.failed
    if failed:
        out.append(f"Result:       FAIL — {len(failed)} check(s) failed: {', '.join(failed)}")
    else:
        out.append("Result:       PASS")
    return "\n".join(out)


@click.group("attest")
def attest() -> None:
    """Check TEE attestations (TDX quotes, RA-TLS certificates, live endpoints)."""


@attest.command("verify")
@click.argument("target")
@click.option("--collateral", "collateral_file", type=click.Path(dir_okay=False),
              help="DCAP collateral JSON (the form dcap-qvl's QuoteCollateralV3.to_json writes).")
@click.option("--pccs-url", help="Fetch collateral from this PCCS (or Intel PCS) base URL; "
              "cached in $COCOON_COLLATERAL_CACHE if set.")
@click.option("--time", "time_", metavar="WHEN", help="Verification time, ISO 8601 or unix seconds "
              "(default: now). Collateral and certificates must be valid at that time.")
@click.option("--role", type=click.Choice(["worker", "proxy", "client"]),
              help="Role the peer must have; its image hash is checked against that role's list "
              "(default: the role in the claims, else worker).")
@click.option("--allow-image", "allow_images", multiple=True, metavar="HEX",
              help="An allowed image hash (64 hex digits) for the role; repeatable.")
@click.option("--registry-snapshot", "snapshot_file", type=click.Path(dir_okay=False),
              help="Registry snapshot JSON: worker_image_hashes, proxy_image_hashes, model_hashes "
              "(hex lists), is_test, version.")
@click.option("--accept-tcb", "accept_tcb", multiple=True, type=click.Choice(TCB_STATUSES), metavar="STATUS",
              help="A TCB status to accept; repeatable (default: UpToDate only). One of: "
              + ", ".join(TCB_STATUSES) + ".")
@click.option("--allow-simulated", "dev_trust_file", type=click.Path(dir_okay=False), metavar="TRUST_JSON",
              help="Accept quotes of the SIMULATED TEE signed by this development root "
              "(its trust.json); the allow-list then counts as a test registry.")
@click.option("--claims", "claims_value", metavar="FILE|HEX",
              help="For a bare quote: the claims whose SHA-512 the report data must equal.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def verify_cmd(target: str, collateral_file: str | None, pccs_url: str | None, time_: str | None,
               role: str | None, allow_images: tuple[str, ...], snapshot_file: str | None,
               accept_tcb: tuple[str, ...], dev_trust_file: str | None, claims_value: str | None,
               as_json: bool) -> None:
    """Verify a quote file, an RA-TLS certificate (PEM/DER) or a live HOST:PORT.

    Prints the measurements, the image hash, the TCB status and each check with pass or
    fail. Exit status: 0 all checks passed, 1 a check failed, 2 bad usage.
    """
    now = parse_time(time_)
    if now is None:
        import time as _t

        now = int(_t.time())
    if collateral_file:
        _check_collateral_file(collateral_file)
    try:
        source, verdict = asyncio.run(_run(
            target, collateral_file=collateral_file, pccs_url=pccs_url, now=now, role=role,
            allow_images=allow_images, snapshot_file=snapshot_file, accept_tcb=accept_tcb,
            dev_trust_file=dev_trust_file, claims_value=claims_value,
        ))
    except click.ClickException:
        raise
    except Exception as e:  # never a traceback for the user
        raise click.ClickException(f"{type(e).__name__}: {e}") from None
    if as_json:
        click.echo(json.dumps({"source": source, "verified_at": now, **verdict.to_dict()}, indent=2))
    else:
        click.echo(_human(source, verdict, now))
    if time_ is None and (collateral_file or pccs_url):
        hint = _expiry_hint(verdict, now)
        if hint:
            click.echo(hint, err=True)
    sys.exit(0 if verdict.ok else 1)


def _check_collateral_file(path: str) -> None:
    """Refuse a --collateral file that cannot be collateral JSON, naming it (usage error, exit 2)."""
    try:
        Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise UsageProblem(f"--collateral {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise UsageProblem(f"--collateral {path}: not collateral JSON (the file is not text); give the "
                           "JSON dcap-qvl's QuoteCollateralV3.to_json writes") from None


def _expiry_hint(verdict: Verdict, now: int) -> str | None:
    """When collateral had expired at the default time (now), say how to verify as of another time."""
    failed = [c for c in verdict.checks if c.ok is False and "expired" in c.detail.lower()]
    if not failed:
        return None
    until = re.search(r"next_update: UnixTime\((\d+)\)", failed[0].detail)
    stamp = lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    valid = f" (it was valid until {stamp(int(until.group(1)))})" if until else ""
    return (f"hint: the collateral had expired at the verification time, now ({stamp(now)}){valid}: verify as of a "
            "time it was valid with --time WHEN (ISO 8601 or unix seconds), or fetch current collateral with "
            "--pccs-url URL")


@attest.command("dev-root")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--days", type=click.IntRange(1, 36500), default=365, show_default=True,
              help="Days the development collateral stays valid.")
def dev_root_cmd(directory: str, days: int) -> None:
    """Create a SIMULATED-TEE development root in DIRECTORY (keys, certificates, trust.json).

    Only for test networks: verifiers accept its quotes only with --allow-simulated and a
    registry whose parameters carry the test flag.
    """
    from node.tee.simulated import DevRoot

    if Path(directory).exists() and any(Path(directory).iterdir()):
        raise click.ClickException(f"{directory} is not empty")
    trust = DevRoot.generate(collateral_days=days).save(directory)
    click.echo(f"SIMULATED development root written to {directory}; verifiers use {trust}")


@attest.command("serve-simulated")
@click.option("--dev-root", "dev_root", required=True, type=click.Path(file_okay=False, exists=True),
              help="Development root directory (from `attest dev-root`).")
@click.option("--measurements", type=click.Path(dir_okay=False, exists=True),
              help="JSON with hex measurements (mr_td, rt_mr0..3, ...), or {\"name\": ...}.")
@click.option("--role", type=click.Choice(["worker", "proxy"]), default="worker", show_default=True,
              help="The role its certificate claims; without --measurements, also the name its measurements "
                   "derive from.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, type=click.IntRange(0, 65535), help="TCP port (0: any free port).")
def serve_simulated_cmd(dev_root: str, measurements: str | None, role: str, host: str, port: int) -> None:
    """Serve an RA-TLS endpoint backed by the SIMULATED TEE (to try `attest verify HOST:PORT`).

    It answers GET / with its image hash to any client; it does not check peers.
    """
    from node.tee.providers import SimulatedProvider
    from node.tee.ratls import Identity, load_identity
    from node.tee.simulated import DevRoot, SimulatedTdx, default_measurements, load_measurements
    from node.tee.quote import parse_quote

    try:
        root = DevRoot.load(dev_root)
        meas = load_measurements(measurements) if measurements else default_measurements(role)
    except (OSError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    ident = Identity.create(SimulatedProvider(SimulatedTdx(root, meas)), role=role)
    image = parse_quote(ident.quote).image_hash.hex()  # type: ignore[arg-type]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    load_identity(ctx, ident)
    click.echo(f"SIMULATED {role} on {host}:{port}, image hash {image} (Ctrl-C to stop)")
    with socket.create_server((host, port)) as srv:
        try:
            while True:
                conn, _ = srv.accept()
                try:
                    with ctx.wrap_socket(conn, server_side=True) as s:
                        s.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + image.encode() + b"\n")
                except (OSError, ssl.SSLError):
                    pass
        except KeyboardInterrupt:
            pass
