"""HTTP framing of a large upload: the guest agent's own parser (api/http.py + api/wire.py, served by the real
ApiServer) vs h11 (Debian's python3-h11, 0.14 in bookworm), both reading a 200 MiB chunked body through a unix
socket in the shape `docker load` sends (32 KiB chunks). Issue 16 asked whether h11 could replace the
hand-written chunked decoding if it is no slower; the h11 side here is its barest server loop (no routing,
no handler), so the comparison favours it.

    pip install h11==0.14.0   # or: apt-get install python3-h11
    python bench/http_framing.py [--runs N]

Prints each side's median time and throughput over N interleaved runs, and the ratio h11 / agent.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "guest-agent"))

import h11  # noqa: E402

from pymachine_agent.api.http import Request  # noqa: E402
from pymachine_agent.api.server import ApiServer, Router  # noqa: E402

TOTAL = 200 << 20
CHUNK = 32 << 10
_FRAME = f"{CHUNK:x}\r\n".encode() + os.urandom(CHUNK) + b"\r\n"
_HEAD = (
    b"POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-tar\r\n\r\n"
)


def upload(path: str) -> float:
    """Seconds from the request's first byte to the reply's head."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    started = time.perf_counter()
    s.sendall(_HEAD)
    for _ in range(TOTAL // CHUNK):
        s.sendall(_FRAME)
    s.sendall(b"0\r\n\r\n")
    reply = b""
    while b"\r\n\r\n" not in reply:
        data = s.recv(65536)
        if not data:
            break
        reply += data
    took = time.perf_counter() - started
    s.close()
    if not reply.startswith(b"HTTP/1.1 200"):
        raise SystemExit(f"upload failed: {reply[:200]!r}")
    return took


def agent_server(folder: Path) -> tuple[str, ApiServer]:
    router = Router()

    @router.route("POST", "/sink")
    def sink(req: Request) -> tuple[int, dict]:
        n = sum(len(piece) for piece in req.iter_body())
        return (200 if n == TOTAL else 400), {"n": n}

    server = ApiServer(router, folder / "agent.sock")
    server.start()
    return str(folder / "agent.sock"), server


def h11_server(folder: Path) -> str:
    path = str(folder / "h11.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(8)

    def serve(c: socket.socket) -> None:
        conn = h11.Connection(h11.SERVER)
        n = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(c.recv(65536))
            elif isinstance(event, h11.Data):
                n += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                break
        body = b'{"n": %d}' % n
        head = [("Content-Length", str(len(body))), ("Content-Type", "application/json")]
        try:
            c.sendall(conn.send(h11.Response(status_code=200 if n == TOTAL else 400, headers=head)))
            c.sendall(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        except OSError:
            pass  # the client stops at the reply's head
        c.close()

    def accept() -> None:
        while True:
            c, _ = listener.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-framing-"))
    agent_path, server = agent_server(folder)
    h11_path = h11_server(folder)
    ours, theirs = [], []
    for _ in range(args.runs):  # interleaved, so load on the machine hits both alike
        ours.append(upload(agent_path))
        theirs.append(upload(h11_path))
    server.stop()
    mib = TOTAL / 2**20
    for name, runs in (("agent framing", ours), ("h11 " + h11.__version__, theirs)):
        median = statistics.median(runs)
        shown = [round(r, 2) for r in runs]
        print(f"{name:14} median {median:.2f} s  {mib / median:6.0f} MiB/s  runs {shown}")
    print(f"h11 / agent (time): {statistics.median(theirs) / statistics.median(ours):.2f}")


if __name__ == "__main__":
    main()
