"""The agent's API socket is root's only (issue 13: "a Unix socket, root-only permissions"): any process
that can connect can change which pods are allowed what, so nobody else may (no kernel needed)."""
from __future__ import annotations

import os
import socket
import stat
import tempfile
from pathlib import Path

import pytest

from policyc.agent.server import serve

NOBODY = 65534


def _connects_as(uid: int, path: Path) -> int:
    """0 when a child running as ``uid`` connects to ``path``, else its errno."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(path))
        except OSError as exc:
            code = exc.errno or 1
        os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_the_api_socket_is_root_only():
    if os.geteuid() != 0:
        pytest.skip("needs root to try the socket as another user (CI runs as root)")
    with tempfile.TemporaryDirectory(prefix="pcsock-") as tmp:
        os.chmod(tmp, 0o755)  # the directory lets anyone through: the socket's own mode decides
        path = Path(tmp) / "agent.sock"
        server = serve(None, path)
        try:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert _connects_as(NOBODY, path) != 0
            assert _connects_as(0, path) == 0
        finally:
            server.shutdown()
            server.server_close()
