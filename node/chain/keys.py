"""Keys as TON users keep them: a 24-word mnemonic (in a file or ``COCOON_MNEMONIC``) or a raw
32-byte Ed25519 seed in a key file (hex or binary). Keys are never printed or logged."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import CocoonError

MNEMONIC_ENV = "COCOON_MNEMONIC"


@dataclass
class Keys:
    public: bytes
    private: bytes  # pytoniq's 64-byte signing key (seed + public key)

    def __repr__(self) -> str:  # never show the private key
        return f"Keys(public={self.public.hex()})"


def keys_from_seed(seed: bytes) -> Keys:
    """Wallet keys from a 32-byte Ed25519 seed (pytoniq's private key is the seed followed by the public key)."""
    from wrappers.keys import wallet_keypair

    return Keys(*wallet_keypair(seed))


def keys_from_words(words: str, where: str) -> Keys:
    """Keys from a 24-word TON mnemonic; ``where`` names its source in the error, never the words."""
    from pytoniq_core.crypto.keys import mnemonic_is_valid, mnemonic_to_private_key

    ws = words.split()
    if len(ws) != 24 or not mnemonic_is_valid(ws):
        raise CocoonError(f"{where} is not a valid 24-word TON mnemonic (the words were not printed)")
    pub, priv = mnemonic_to_private_key(ws)
    return Keys(pub, priv)


def load_keys(mnemonic_file: Optional[str] = None, key_file: Optional[str] = None) -> Keys:
    """Keys from a key file, else a mnemonic file, else ``COCOON_MNEMONIC``."""
    if key_file:
        try:
            raw = Path(key_file).read_bytes()
        except OSError as e:
            raise CocoonError(f"cannot read the key file {key_file}: {e.strerror}") from None
        try:
            seed = bytes.fromhex(raw.decode().strip())
        except (UnicodeDecodeError, ValueError):
            seed = raw
        if len(seed) != 32:
            raise CocoonError(f"{key_file}: a key file holds a 32-byte Ed25519 seed (64 hex digits or 32 bytes)")
        return keys_from_seed(seed)
    words: Optional[str] = None
    if mnemonic_file:
        try:
            words = Path(mnemonic_file).read_text()
        except OSError as e:
            raise CocoonError(f"cannot read the mnemonic file: {e.strerror}") from None
    elif os.environ.get(MNEMONIC_ENV):
        words = os.environ[MNEMONIC_ENV]
    if not words:
        raise CocoonError(f"no key: pass --mnemonic-file FILE (24 words) or --key-file FILE, or set {MNEMONIC_ENV}")
    return keys_from_words(words, "the mnemonic")


def new_mnemonic() -> list[str]:
    """24 fresh words (pytoniq's generator: a valid TON mnemonic without a password)."""
    from pytoniq_core.crypto.keys import mnemonic_new

    return mnemonic_new(24)


def write_mnemonic(path: Path, words: list[str]) -> None:
    """Write ``words`` to a new file readable by its owner only (mode 0600); never overwrite."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CocoonError(f"{path} already exists; choose another --out file (a key is never overwritten)") from None
    except OSError as e:
        raise CocoonError(f"cannot create {path}: {e.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(" ".join(words) + "\n")
        f.flush()
        os.fsync(f.fileno())
