"""A pull that cannot reach its registry says why in words, as docker does (`lookup HOST: …`), not with
Python's `[Errno -3]`: the guest agent's registry client, against a real closed port and a resolver error."""

from __future__ import annotations

import socket
import ssl

import pytest

from pymachine_agent.errors import RegistryError
from pymachine_agent.images.regclient import RegistryClient, connect_error_text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_a_refused_connection_reads_as_words() -> None:
    port = _closed_port()
    client = RegistryClient(f"127.0.0.1:{port}", insecure=True, timeout=10)
    with pytest.raises(RegistryError) as refused:
        client.request("GET", "/v2/", "")
    assert str(refused.value) == f'GET "http://127.0.0.1:{port}/v2/": Connection refused'


def test_a_name_that_does_not_resolve_names_the_host() -> None:
    gai = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    text = connect_error_text(gai, "registry-1.docker.io")
    assert text == "lookup registry-1.docker.io: Temporary failure in name resolution"
    assert connect_error_text(TimeoutError("timed out"), "h") == "timed out"  # no strerror: its text
    tls = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert "CERTIFICATE_VERIFY_FAILED" in connect_error_text(tls, "h")
