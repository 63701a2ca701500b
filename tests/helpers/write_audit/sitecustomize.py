"""Loaded by every Python process started with this folder on PYTHONPATH (helpers.serving.write_audit_env
puts it there for `bentoml serve` and its workers): appends each file the process opens for writing, and each
temporary file or folder it makes, to $WRITE_AUDIT_LOG as "pid event path" lines. A Python audit hook sees
the opens of Python and of the libraries it calls through Python's file objects and os.open."""

import os
import sys

_LOG = os.environ.get("WRITE_AUDIT_LOG")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


def _audit(event: str, args: tuple) -> None:
    if event == "open":
        path, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
    elif event in ("tempfile.mkstemp", "tempfile.mkdtemp"):
        path, writing = args[0], True
    else:
        return
    if writing and isinstance(path, (str, bytes, os.PathLike)):
        os.write(_FD, f"{os.getpid()} {event} {os.fsdecode(path)}\n".encode())


if _LOG:
    _FD = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    sys.addaudithook(_audit)
