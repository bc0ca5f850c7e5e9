"""The engine socket's fast path on a local machine: the handshake both ends speak (pure, stdlib only).

The host agent reaches the guest agent's API through QEMU's user network instead of the SSH link: a `hostfwd`
rule on the host's 127.0.0.1 (a random port) to the guest's `RELAY_GUEST_PORT`, where the guest agent's relay
listens on the uplink device only (api/relay.py). Any local user of the host could connect to that port, so
each connection must prove that it knows a secret which only the host agent holds: a fresh 32 bytes it hands
the guest agent over the SSH link (`PUT /pymachine/v1/fastpath`) at every link-up. The secret itself never
travels on the fast path; one round trip proves it both ways:

    host → relay   MAGIC (8) | nonce (16, fresh per connection) | HMAC-SHA256(secret, "client" | nonce) (32)
    relay → host   HMAC-SHA256(secret, "relay" | nonce) (32)

then the bytes of the HTTP connection, unchanged. The relay compares in constant time, refuses a nonce it has
seen (a captured hello cannot be replayed) and closes a connection whose hello is wrong, short or late without
a byte. The host agent sends nothing of its client's until the relay proved the secret too, so a process that
took the port (QEMU died, another user bound it) learns nothing from the host agent but one random nonce.
docs/hostagent.md "The engine socket's fast path" says why this reaches nothing that was not reachable before.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import OrderedDict

MAGIC = b"PMFAST1\n"
NONCE_LEN = 16
TAG_LEN = 32
SECRET_LEN = 32
HELLO_LEN = len(MAGIC) + NONCE_LEN + TAG_LEN
# The relay's guest port: fixed, so that QEMU's rule list tells it apart from published ports after any crash
# (qemufwd.HostFwd.ours), and in the RFC 4727 experimental range, which no service uses. A container cannot
# publish it (the relay holds it, as sshd holds 22).
RELAY_GUEST_PORT = 1021


def new_secret() -> bytes:
    return os.urandom(SECRET_LEN)


def _tag(secret: bytes, who: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, who + nonce, hashlib.sha256).digest()


def hello(secret: bytes, nonce: bytes | None = None) -> tuple[bytes, bytes]:
    """The host's first bytes on a new connection, and the nonce they carry (to check the relay's proof)."""
    nonce = os.urandom(NONCE_LEN) if nonce is None else nonce
    if len(nonce) != NONCE_LEN:
        raise ValueError(f"a nonce is {NONCE_LEN} bytes")
    return MAGIC + nonce + _tag(secret, b"client", nonce), nonce


def check_hello(secret: bytes, data: bytes) -> bytes | None:
    """The nonce of a well-formed hello made with `secret`, else None (wrong length, magic or tag)."""
    if len(data) != HELLO_LEN or not data.startswith(MAGIC):
        return None
    nonce = data[len(MAGIC) : len(MAGIC) + NONCE_LEN]
    tag = data[len(MAGIC) + NONCE_LEN :]
    return nonce if hmac.compare_digest(tag, _tag(secret, b"client", nonce)) else None


def proof(secret: bytes, nonce: bytes) -> bytes:
    """The relay's answer to a good hello: it knows the secret too."""
    return _tag(secret, b"relay", nonce)


def check_proof(secret: bytes, nonce: bytes, data: bytes) -> bool:
    return len(data) == TAG_LEN and hmac.compare_digest(data, proof(secret, nonce))


def parse_secret(body: object) -> bytes:
    """The secret in `PUT /pymachine/v1/fastpath`'s body `{"secret": "<64 hex digits>"}`, or ValueError."""
    text = body.get("secret") if isinstance(body, dict) else None
    try:
        secret = bytes.fromhex(text) if isinstance(text, str) else b""
    except ValueError:
        secret = b""
    if len(secret) != SECRET_LEN:
        raise ValueError(f'the body is {{"secret": "<{2 * SECRET_LEN} hex digits>"}}')
    return secret


class SeenNonces:
    """The nonces of the current secret's accepted hellos, the newest `limit` of them: a replayed hello is
    refused. (Replaying needs a captured hello, which only a port taken from QEMU could collect, and then the
    relay behind that port is not reachable: this is the second lock, not the first.)"""

    def __init__(self, limit: int = 65536) -> None:
        self.limit = limit
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def add(self, nonce: bytes) -> bool:
        """True the first time `nonce` is seen."""
        if nonce in self._seen:
            return False
        self._seen[nonce] = None
        if len(self._seen) > self.limit:
            self._seen.popitem(last=False)
        return True
