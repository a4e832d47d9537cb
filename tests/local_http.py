"""In-process HTTP stand-ins for the tests (a Prometheus answer, exporters, model servers, a webhook): on 127.0.0.1,
served from daemon threads, and quiet about clients that hang up.

Why not socketserver's own error report: it prints a traceback from the handler's thread, and Python 3.11's traceback
formatting parses source lines with `ast` to place its carets. CPython up to 3.11.7 (CI's Python) keeps the AST
constructor's recursion counter per interpreter, not per thread (python/cpython#106905, fixed by #113035), so a parse
can make an `ast.parse` running at the same time in the test's own thread fail with "SystemError: AST constructor
recursion depth mismatch". It did, in CI: a gateway stand-in wrote to a client that had gone while
tests/test_layout.py parsed the program. Here a hang-up is counted and nothing is printed; any other handler error is
kept in `errors` and reported in one line built from `traceback.extract_tb`, which reads frames without parsing them.
"""

from __future__ import annotations

import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StandInServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0):
        super().__init__(("127.0.0.1", port), handler)
        self.hang_ups = 0
        """Requests whose client went away before the answer was written: expected when a test stops listening."""
        self.errors: list[str] = []
        """Every other handler failure, one line each: `ExceptionType: message (file:line)`."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):  # BrokenPipeError, ConnectionResetError, ConnectionAbortedError
            self.hang_ups += 1
            return
        frames = traceback.extract_tb(error.__traceback__) if error is not None else []
        where = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
        line = f"{type(error).__name__}: {error}{where}"
        self.errors.append(line)
        sys.stderr.write(f"stand-in at {self.url} failed a request from {client_address[0]}: {line}\n")

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def serve(handler: type[BaseHTTPRequestHandler], port: int = 0) -> StandInServer:
    """Start `handler` on 127.0.0.1 (`port`, or one the system picks) in a daemon thread; `stop()` ends it."""
    server = StandInServer(handler, port)
    threading.Thread(target=server.serve_forever, daemon=True, name=f"stand-in-{server.server_address[1]}").start()
    return server
