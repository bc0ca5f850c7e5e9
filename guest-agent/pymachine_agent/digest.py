"""sha256 for bulk data (layers, blobs, build contexts): the faster of the stdlib's two implementations here.

hashlib.sha256 is OpenSSL's, which picks its code by CPUID: AVX2+BMI2 on a CPU that has them. Under QEMU's
TCG (our machines on hosts without KVM) the guest CPU (`cpu mode='maximum'`) reports AVX2, and TCG emulates
those vector instructions far more slowly than the plain integer code it translates: in the guest, 40 MiB
took 4.3-6.8 s with OpenSSL's AVX2 code, 1.0-1.9 s with its integer code (OPENSSL_ia32cap masking AVX, AVX2
and BMI) and 1.4-1.9 s with CPython's own C implementation (`_sha256`; `_sha2` from 3.12), in alternating
rounds (docs/hostagent.md, issue 17). On real hardware OpenSSL is several times faster than CPython's. So the
first bulk hash times both on the same sample and keeps the faster for the process's life. The guest's init
sets that mask for the agent and sshd under TCG (pminit.py, `OPENSSL_ia32cap`), where OpenSSL then usually
wins.

The sha256 of a `docker load` is its largest cost per byte (the diff_id that must be checked): a third to a
half of the guest agent's CPU under TCG with OpenSSL's AVX2 code. `PYMACHINE_SHA256=openssl|builtin` fixes
the choice (tests, measurements). Small hashes (HMACs, IDs) keep hashlib: the choice only pays on megabytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("pymachine_agent.digest")

ENV = "PYMACHINE_SHA256"
_SAMPLE = bytes(128 * 1024)  # big enough to time (tens of ms under TCG), small enough to cost nothing on KVM
_ROUNDS = 3

Constructor = Callable[..., Any]
_lock = threading.Lock()
_chosen: Constructor | None = None


def builtin() -> Constructor | None:
    """CPython's own sha256 (no OpenSSL), where this Python has it."""
    for module in ("_sha256", "_sha2"):  # 3.11, 3.12+
        try:
            return __import__(module).sha256  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    return None


def _cost(ctor: Constructor, timer: Callable[[], float]) -> float:
    """Seconds to hash the sample, the best of a few rounds (the first call also loads the code)."""
    ctor(_SAMPLE[:4096]).digest()
    best = float("inf")
    for _ in range(_ROUNDS):
        start = timer()
        ctor(_SAMPLE).digest()
        best = min(best, timer() - start)
    return best


def choose(
    candidates: dict[str, Constructor], timer: Callable[[], float] = time.thread_time
) -> tuple[str, Constructor]:
    """The candidate that hashed the sample fastest (pure apart from the timing; unit-tested with a timer)."""
    costs = {name: _cost(ctor, timer) for name, ctor in candidates.items()}
    name = min(costs, key=costs.__getitem__)
    log.info("sha256: %s (%s)", name, ", ".join(f"{n} {c * 1000:.1f} ms/128 KiB" for n, c in costs.items()))
    return name, candidates[name]


def candidates() -> dict[str, Constructor]:
    found: dict[str, Constructor] = {"openssl": hashlib.sha256}
    own = builtin()
    if own is not None:
        found["builtin"] = own
    wanted = os.environ.get(ENV, "")
    if wanted in found:
        return {wanted: found[wanted]}
    return found


def sha256(data: bytes | memoryview = b"") -> Any:
    """A new sha256 object (update, digest, hexdigest, copy) of the implementation chosen for bulk data."""
    global _chosen
    if _chosen is None:
        with _lock:
            if _chosen is None:
                found = candidates()
                _chosen = choose(found)[1] if len(found) > 1 else next(iter(found.values()))
    return _chosen(data)


def file_sha256(fileobj: Any) -> str:
    """`sha256:<hex>` of a binary file read to its end."""
    return "sha256:" + hashlib.file_digest(fileobj, sha256).hexdigest()
