"""The host side of a published UDP port (hostagent/udp.py): what closing it does."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from support.poll import until

from pymachine.hostvm.hostagent.portforward import Forwarder
from pymachine.hostvm.hostagent.ports import PortRule


class DownLink:
    """A link that never comes up, counting the relays that ask for it."""

    def __init__(self) -> None:
        self.asked = 0

    def current(self) -> None:
        return None

    def get(self, timeout: float) -> None:
        self.asked += 1
        raise OSError("the link is down")


def waiting_for_a_datagram(thread: threading.Thread) -> bool:
    """True when `thread` sleeps in the kernel in a receive on its socket (not on the GIL, not running)."""
    return "wait_for_more_packets" in Path(f"/proc/self/task/{thread.native_id}/wchan").read_text()


def test_closing_a_udp_port_while_its_relay_waits_relays_nothing() -> None:
    """Closing shuts the socket down, which wakes the relay's receive with an empty read and no sender. The
    relay took that for a datagram and asked the link for a channel to the guest: a 10 s wait for a link that
    was down, or an exec channel opened in the guest for a port already closed (seen as an unhandled
    exception in the thread of an earlier test's relay, which asked a fake link without `get`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    link = DownLink()
    fwd = Forwarder(link)  # type: ignore[arg-type]
    fwd.open(PortRule("udp", "127.0.0.1", port, port, "c1"))  # type: ignore[arg-type]
    relay = next(t for t in threading.enumerate() if t.name == f"udp-{port}")
    until(lambda: waiting_for_a_datagram(relay), timeout=30, what="the relay to wait for a datagram")
    fwd.close_all()
    relay.join(timeout=30)
    assert not relay.is_alive()
    assert link.asked == 0
