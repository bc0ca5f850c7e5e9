"""Detach keys (`docker attach --detach-keys`, the client config's `detachKeys`; default ctrl-p,ctrl-q).

On an attach with a TTY, dockerd watches the client's input for the sequence; when it comes, the client is
detached (its connection ends) and the container keeps running with its stdin open. The bytes of a partly
typed sequence are held back and sent on as soon as the sequence breaks off, as moby's escape proxy does.
"""

from __future__ import annotations

DEFAULT = b"\x10\x11"  # ctrl-p, ctrl-q
_CTRL_SPECIAL = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}


class InvalidDetachKeys(ValueError):
    pass


def parse(spec: str) -> bytes:
    """`ctrl-p,ctrl-q` / `a,ctrl-@` → bytes (moby's term.ToBytes); "" → the default."""
    if not spec:
        return DEFAULT
    out = bytearray()
    for key in spec.split(","):
        key = key.strip()
        low = key.lower()
        if low.startswith("ctrl-") and len(key) == 6:
            c = low[5]
            if "a" <= c <= "z":
                out.append(ord(c) - ord("a") + 1)
                continue
            if c in _CTRL_SPECIAL:
                out.append(_CTRL_SPECIAL[c])
                continue
        elif len(key) == 1 and key.isprintable():
            out += key.encode()
            continue
        raise InvalidDetachKeys(f"Invalid detach keys ({spec}) provided")
    return bytes(out)


class EscapeScanner:
    """Feeds client input through; says when the detach sequence has been typed."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self.held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """(bytes to pass on to the container, detach now?)"""
        out = bytearray()
        for i in range(len(data)):
            byte = data[i : i + 1]
            if byte == self.keys[len(self.held) : len(self.held) + 1]:
                self.held += byte
                if len(self.held) == len(self.keys):
                    self.held = b""
                    return bytes(out), True
                continue
            out += self.held
            self.held = b""
            if byte == self.keys[:1]:
                self.held = byte
            else:
                out += byte
        return bytes(out), False
