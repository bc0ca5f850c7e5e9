"""pymachine's guest agent: the container engine inside the VM.

Runs on the guest's Debian Python 3.11 with the standard library only (ctypes where Python lacks a
syscall). It must never import host code (`pymachine.*`).
"""

from pathlib import Path

AGENT_ROOT = Path(__file__).resolve().parent
