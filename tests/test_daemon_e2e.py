"""The real daemon on a real socket, reached by curl, the real CLI and pylxd."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pylxd

from tests.fixtures.daemon import RunningDaemon, start_daemon


def curl(d: RunningDaemon, path: str, *args: str) -> dict:
    out = subprocess.run(["curl", "-s", "--unix-socket", str(d.socket), *args, f"http://localhost{path}"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_get_1_0_is_an_lxd_sync_response(daemon: RunningDaemon) -> None:
    r = curl(daemon, "/1.0")
    assert set(r) == {"type", "status", "status_code", "operation", "error_code", "error", "metadata"}
    assert (r["type"], r["status"], r["status_code"], r["error_code"]) == ("sync", "Success", 200, 0)
    meta = r["metadata"]
    assert meta["api_version"] == "1.0" and meta["auth"] == "trusted"
    assert "instances" in meta["api_extensions"]
    env = meta["environment"]
    for key in ("server_name", "server_version", "kernel", "kernel_version", "architectures", "os_name"):
        assert env[key], key
    assert env["server_pid"] == daemon.proc.pid


def test_pylxd_connects_and_reads_host_info(daemon: RunningDaemon) -> None:
    client = pylxd.Client(endpoint=str(daemon.socket))
    assert client.trusted
    assert client.host_info["environment"]["server_name"]
    assert client.has_api_extension("instances")


def test_errors_are_envelopes(daemon: RunningDaemon) -> None:
    r = curl(daemon, "/1.0/no-such-thing")
    assert (r["type"], r["error_code"], r["error"]) == ("error", 404, "not found")
    r = curl(daemon, "/1.0", "-X", "POST")
    assert (r["type"], r["error_code"]) == ("error", 405)
    r = curl(daemon, "/1.0/operations/nope")
    assert r["error_code"] == 404 and "Operation 'nope' not found" in r["error"]
    r = curl(daemon, "/1.0/operations/x/wait?timeout=soon")
    assert r["error_code"] == 400 and "query" in r["error"]


def test_openapi_is_served(daemon: RunningDaemon) -> None:
    out = subprocess.run(["curl", "-s", "--unix-socket", str(daemon.socket),
                          "http://localhost/1.0/openapi.json"], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    assert "/1.0/operations/{id}/wait" in doc["paths"]


def test_cli_status_and_formats(daemon: RunningDaemon) -> None:
    r = daemon.cli("status", check=True)
    assert "Server:" in r.stdout and "Virtualization:" in r.stdout
    j = json.loads(daemon.cli("status", "--format", "json", check=True).stdout)
    assert j["pid"] == daemon.proc.pid
    assert json.loads(daemon.cli("operation", "list", "--format", "json", check=True).stdout) == []
    assert "DESCRIPTION" in daemon.cli("operation", "list", check=True).stdout


def test_cli_error_is_one_line(daemon: RunningDaemon) -> None:
    r = daemon.cli("operation", "show", "missing-op")
    assert r.returncode == 1
    assert r.stderr.strip() == "Error: Operation 'missing-op' not found"


def test_cli_says_when_the_daemon_is_not_running(tmp_path: Path) -> None:
    d = RunningDaemon(tmp_path, None, tmp_path / "log")  # type: ignore[arg-type]
    r = d.cli("status")
    assert r.returncode == 1
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("Error: microcloudd is not running")
    assert "microcloudd --state-dir" in line


def test_cli_says_when_the_daemon_dies_mid_request(tmp_path: Path) -> None:
    """A daemon that reads the request and vanishes (killed mid-request): one line, exit 1."""
    import socket
    import threading

    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(tmp_path / "unix.socket"))
    srv.listen(1)

    def accept_and_vanish() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.close()

    t = threading.Thread(target=accept_and_vanish, daemon=True)
    t.start()
    try:
        r = RunningDaemon(tmp_path, None, tmp_path / "log").cli("status")  # type: ignore[arg-type]
    finally:
        t.join(5)
        srv.close()
    assert r.returncode == 1
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("Error: lost the connection to microcloudd mid-request")


def test_second_daemon_on_same_state_dir_is_refused(daemon: RunningDaemon) -> None:
    r = subprocess.run([str(Path(daemon.proc.args[0])), "--state-dir", str(daemon.state_dir)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert f"already running on {daemon.state_dir}" in r.stderr
    assert curl(daemon, "/1.0")["type"] == "sync"  # the first one is untouched


def test_sigterm_exits_quickly_and_removes_the_socket(daemon_dir: Path) -> None:
    d = start_daemon(daemon_dir)
    t0 = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 5
    assert not d.socket.exists()
    d2 = start_daemon(daemon_dir)  # and the state dir is reusable at once
    assert d2.stop() == 0


def test_socket_permissions(daemon: RunningDaemon) -> None:
    mode = daemon.socket.stat().st_mode & 0o777
    assert mode == 0o660
