"""Starting and stopping the real programs the tests run: each on 127.0.0.1 with a free port, its own folder and
log under build/, and stopped by the PID it was started with, pass or fail."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.tools import stop

LOG_TAIL_LINES = 40


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, never one this process handed out before: a port stays free until the program it
    was chosen for binds it, and a second free_port() in between could otherwise return it again (seen in CI: two
    routers started back to back, the second failing with "Address already in use")."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class StartupFailed(RuntimeError):
    pass


@dataclass
class Server:
    name: str
    url: str
    folder: Path
    process: subprocess.Popen

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- last {lines} lines of {self.log} ---\n" + "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_ready(self, path: str, seconds: float) -> float:
        """Seconds until `path` answers 200; StartupFailed (with the log) if the process exits or time runs out."""
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            if not self.alive():
                raise StartupFailed(f"{self.name} exited with {self.process.returncode} while starting\n{self.tail()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as answer:
                    if answer.status == 200:
                        return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.5)
        raise StartupFailed(f"{self.name} not ready on {self.url}{path} after {seconds:.0f} s\n{self.tail()}")

    def terminate(self) -> None:
        """SIGTERM to the server itself, as the kubelet sends it; the server decides how to wind down."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> None:
        """The server by its PID (tests/tools.stop), then whatever is left of the process group it leads (vLLM's
        engine and workers are its children)."""
        stop(self.process, timeout)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def fresh_folder(folder: Path) -> Path:
    """An empty folder for a server's files: a Prometheus reopening an earlier run's data would show that run's
    series for five more minutes (nothing marks the targets of a stopped server as gone)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def start(name: str, argv: list[str], folder: Path, port: int, env: dict[str, str] | None = None,
          cpus: set[int] | None = None) -> Server:
    """`cpus` keeps the server and its children on those cores: in a cluster each program has a node of its own,
    here everything shares two cores."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "server.log").open("w") as log:
        # A session of its own: its PID leads a process group, so its children are stopped with it.
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=folder,
                                   env={**os.environ, **(env or {})}, start_new_session=True,
                                   preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    return Server(name, f"http://127.0.0.1:{port}", folder, process)
