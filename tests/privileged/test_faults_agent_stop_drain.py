"""A guest agent told to stop (SIGTERM: a restart by the guest init, a re-provision) answers the requests it
already took before it exits (issue 16): the client of a request in flight gets its reply, not EOF, and new
clients find no socket (which the host agent's engine socket retries on the next agent). The real agent
process, with a request whose body is still arriving when the signal comes."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

from support.agent import start_agent
from support.poll import until

HANG_GUARD = 60.0  # seconds: a bound against hanging, not a speed claim


def test_a_request_in_flight_when_the_agent_stops_gets_its_reply(tmp_path: Path) -> None:
    agent = start_agent(tmp_path / "a")
    try:
        body = json.dumps({"Name": "in-flight"}).encode()
        client = socket.socket(socket.AF_UNIX)
        client.settimeout(HANG_GUARD)
        client.connect(str(agent.socket_path))
        head = (
            "POST /v1.44/volumes/create HTTP/1.1\r\nHost: docker\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        client.sendall(head + body[:5])
        until(lambda: "POST /v1.44/volumes/create" in agent.log_tail(), HANG_GUARD, "the agent to take it")
        agent.proc.send_signal(signal.SIGTERM)
        until(lambda: not agent.socket_path.exists(), HANG_GUARD, "the agent to stop accepting")
        time.sleep(2)  # the fault lasts: an agent that does not wait for its request has exited by now
        client.sendall(body[5:])
        reply = b""
        while b"\r\n\r\n" not in reply and (chunk := client.recv(65536)):
            reply += chunk
        client.close()
        assert reply.startswith(b"HTTP/1.1 201 "), (reply, agent.log_tail())
        assert agent.proc.wait(HANG_GUARD) == 0
    finally:
        agent.stop()
