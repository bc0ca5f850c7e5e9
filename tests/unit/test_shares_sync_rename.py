"""Sync shares: a rename on one side crosses as a rename (`move`), not as the content again
(synclogic.moves, syncfs.Applier.move, the host side's flush); when the receiver cannot make it (its copy of
the old name changed meanwhile), it asks for the new name's content (`want`) and keeps its own change."""

from __future__ import annotations

import io
import os
from pathlib import Path

from pymachine_agent import synclogic
from pymachine_agent.syncfs import Applier
from pymachine_agent.synclogic import Known

F1 = ("f", 5, 100, 0o644)
F2 = ("f", 6, 200, 0o644)
L1 = ("l", "target")
D = ("d", 0o755)


def test_a_file_or_link_with_the_same_signature_under_a_new_name_is_a_move() -> None:
    assert synclogic.moves({"a": F1, "ln": L1}, {"b/a": F1, "ln2": L1, "c": F2}) == [
        ("a", "b/a"),
        ("ln", "ln2"),
    ]
    # ambiguous (two deleted, or two added, with one signature), folders, and nothing matching: no move
    assert synclogic.moves({"a": F1, "b": F1}, {"c": F1}) == []
    assert synclogic.moves({"a": F1}, {"b": F1, "c": F1}) == []
    assert synclogic.moves({"d": D}, {"e": D}) == []
    assert synclogic.moves({"a": F1}, {"b": F2}) == []


def _frames(buf: io.BytesIO) -> list[tuple[dict, bytes]]:
    buf.seek(0)
    out = []
    while buf.tell() < len(buf.getvalue()):
        header = synclogic.read_frame(buf)
        body = buf.read(int(header.get("size") or 0)) if header["op"] == "put" else b""
        out.append((header, body))
    return out


def _host_share(tmp_path: Path) -> tuple[object, Path, Path]:
    """A host side with `share/old.txt` agreed with a guest copy `copy/old.txt` (same content and mtime)."""
    from pymachine.hostvm.hostagent.syncshare import SyncShare

    share, copy = tmp_path / "share", tmp_path / "copy"
    share.mkdir()
    copy.mkdir()
    for root in (share, copy):
        (root / "old.txt").write_text("12345" * 1000)
        os.utime(root / "old.txt", ns=(10**18, 10**18))
    s = SyncShare(str(share), tmp_path / "state", lambda: None)
    s.known.set("old.txt", synclogic.sig_of(str(share), "old.txt"))
    s.live, s.out = True, io.BytesIO()  # type: ignore[assignment]
    return s, share, copy


def test_a_host_rename_is_sent_as_a_move_and_the_guest_renames_its_copy(tmp_path: Path) -> None:
    s, share, copy = _host_share(tmp_path)
    (share / "sub").mkdir()
    (share / "old.txt").rename(share / "sub" / "new.txt")
    s.flush({"old.txt", "sub", "sub/new.txt"})  # type: ignore[attr-defined]
    frames = _frames(s.out)  # type: ignore[attr-defined]
    ops = [(h["op"], h.get("path")) for h, _ in frames if h["op"] != "mark"]
    assert ("move", "old.txt") in ops and ("put", "sub") in ops, ops
    assert not [h for h, _ in frames if h.get("path") in ("sub/new.txt", "old.txt") and h["op"] != "move"]
    assert sum(len(body) for _, body in frames) == 0  # no content crossed
    # the guest applies it: renamed in its copy, mtime and content as they were, and no echo to send back
    guest_known = Known({"old.txt": synclogic.sig_of(str(copy), "old.txt")})
    applier = Applier(str(copy), "guest", guest_known)
    for header, _ in frames:
        if header["op"] == "put":
            applier.put(header, io.BytesIO())
        elif header["op"] == "move":
            assert applier.apply_move(header)
    assert not (copy / "old.txt").exists() and (copy / "sub" / "new.txt").read_text() == "12345" * 1000
    assert synclogic.manifest(str(copy)) == synclogic.manifest(str(share))
    assert guest_known.is_echo("sub/new.txt", synclogic.sig_of(str(copy), "sub/new.txt"))
    assert "old.txt" not in guest_known.entries


def test_a_move_the_receiver_cannot_make_keeps_its_change_and_asks_for_the_content(tmp_path: Path) -> None:
    s, share, copy = _host_share(tmp_path)
    (share / "old.txt").rename(share / "new.txt")
    s.flush({"old.txt", "new.txt"})  # type: ignore[attr-defined]
    move = next(h for h, _ in _frames(s.out) if h["op"] == "move")  # type: ignore[attr-defined]
    (copy / "old.txt").write_text("changed in the guest meanwhile\n")
    applier = Applier(str(copy), "guest", Known({"old.txt": synclogic.base_of(move)}))
    assert not applier.apply_move(move)  # and old.txt, changed here, is not deleted either
    assert (copy / "old.txt").read_text() == "changed in the guest meanwhile\n" and not (
        copy / "new.txt"
    ).exists()
    # the host, asked for it (`want`), sends new.txt's content as a put
    s.out = io.BytesIO()  # type: ignore[attr-defined]
    with s.lock:  # type: ignore[attr-defined]
        s.known.forget("new.txt")  # type: ignore[attr-defined]
    s.flush({"new.txt"})  # type: ignore[attr-defined]
    puts = [(h, body) for h, body in _frames(s.out) if h["op"] == "put"]  # type: ignore[attr-defined]
    assert [(h["path"], body) for h, body in puts] == [("new.txt", b"12345" * 1000)]


def test_a_file_with_the_same_size_and_time_but_other_content_is_not_taken_for_the_renamed_one(
    tmp_path: Path,
) -> None:
    """mtimes come from a coarse clock (one tick), and unpacked files keep theirs: the receiver's file at the
    old name can match the signature and still be another file. The move carries the content's hash."""
    s, share, copy = _host_share(tmp_path)
    (share / "old.txt").rename(share / "new.txt")
    s.flush({"old.txt", "new.txt"})  # type: ignore[attr-defined]
    move = next(h for h, _ in _frames(s.out) if h["op"] == "move")  # type: ignore[attr-defined]
    (copy / "old.txt").write_text("54321" * 1000)  # same size ...
    os.utime(copy / "old.txt", ns=(10**18, 10**18))  # ... and time: the same signature
    assert synclogic.sig_of(str(copy), "old.txt") == synclogic.base_of(move)
    applier = Applier(str(copy), "guest", Known({"old.txt": synclogic.base_of(move)}))
    assert not applier.move(move["path"], move["to"], synclogic.base_of(move), move["digest"])
    assert not (copy / "new.txt").exists()
