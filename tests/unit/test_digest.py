"""digest.py: bulk sha256 by the faster of OpenSSL's and CPython's own; either gives hashlib's digests."""

from __future__ import annotations

import hashlib
import io

import pytest

from pymachine_agent import digest


@pytest.mark.parametrize("name", ["openssl", "builtin"])
def test_each_implementation_gives_hashlibs_digest(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    found = digest.candidates()
    if name not in found:
        pytest.fail(f"this Python has no {name} sha256: {sorted(found)}")
    data = bytes(range(256)) * 5000
    h = found[name](memoryview(data)[:1000])
    h.update(memoryview(data)[1000:])
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    monkeypatch.setenv(digest.ENV, name)
    assert digest.candidates() == {name: found[name]}  # the variable fixes the choice
    monkeypatch.setattr(digest, "_chosen", None)
    assert digest.sha256(data).digest() == hashlib.sha256(data).digest()
    assert digest.file_sha256(io.BytesIO(data)) == "sha256:" + hashlib.sha256(data).hexdigest()


def test_the_faster_one_is_chosen() -> None:
    """A timer under which every hash made by `slow` takes 10 s and every other 1 s."""
    calls: list[str] = []

    def ctor(name: str):  # type: ignore[no-untyped-def]
        def make(data: bytes = b"") -> object:
            calls.append(name)
            return hashlib.sha256(data)

        return make

    last = {"t": 0.0}

    def timer() -> float:
        # a timed hash sits between two reads: the second one charges whoever hashed last
        last["t"] += 10.0 if calls and calls[-1] == "slow" else 1.0
        return last["t"]

    name, _ = digest.choose({"slow": ctor("slow"), "fast": ctor("fast")}, timer)
    assert name == "fast"
    name, _ = digest.choose({"fast": ctor("fast"), "slow": ctor("slow")}, timer)
    assert name == "fast"
