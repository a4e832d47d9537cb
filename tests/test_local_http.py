"""The tests' in-process stand-ins must never format a traceback from their own threads (see tests/local_http.py:
on CI's Python 3.11.7 that broke an `ast.parse` in the test's thread), and must still say when a handler fails."""

from __future__ import annotations

import ast
import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler

import pytest

from tests.local_http import serve

BOUND_SECONDS = 10


class _Handlers(BaseHTTPRequestHandler):
    client_gone = threading.Event()

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 (http.server's name)
        if self.path == "/bug":
            raise ValueError("a bug in the stand-in")
        # /late: answer only once the client has hung up, in pieces until the closed socket refuses them
        _Handlers.client_gone.wait(BOUND_SECONDS)
        self.send_response(200)
        self.end_headers()
        for _ in range(1000):
            self.wfile.write(b"x" * 65536)


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + BOUND_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {BOUND_SECONDS} s")
        time.sleep(0.02)


@pytest.fixture
def parsed_elsewhere(monkeypatch) -> list[str]:
    """The threads other than the test's that call `ast.parse` (formatting a traceback's carets does)."""
    threads: list[str] = []
    parse = ast.parse

    def watched(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            threads.append(threading.current_thread().name)
        return parse(*args, **kwargs)
    monkeypatch.setattr(ast, "parse", watched)
    return threads


def test_a_client_that_hangs_up_is_counted_and_nothing_is_printed(capfd, parsed_elsewhere):
    _Handlers.client_gone.clear()
    server = serve(_Handlers)
    try:
        with socket.create_connection(server.server_address, timeout=BOUND_SECONDS) as client:
            client.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        _Handlers.client_gone.set()
        _wait_for(lambda: server.hang_ups == 1, "the hang-up")
    finally:
        server.stop()
    assert server.errors == [] and parsed_elsewhere == []
    assert capfd.readouterr().err == ""


def test_a_failing_handler_is_reported_in_one_line_naming_the_error_and_where(capfd, parsed_elsewhere):
    server = serve(_Handlers)
    try:
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"{server.url}/bug", timeout=BOUND_SECONDS)  # the handler dies: no answer
        _wait_for(lambda: server.errors, "the handler's error")
    finally:
        server.stop()
    [error] = server.errors
    assert error.startswith("ValueError: a bug in the stand-in (") and "test_local_http.py:" in error
    err = capfd.readouterr().err
    assert err == f"stand-in at {server.url} failed a request from 127.0.0.1: {error}\n"
    assert "Traceback" not in err and server.hang_ups == 0 and parsed_elsewhere == []
