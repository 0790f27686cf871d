"""A real Herald for the SDK's tests: the binary `cargo build` produced
(``$HERALD_BIN`` or target/debug/herald; built when missing), started on a free
port with a fresh data dir and a random secret. Tests can kill -9 it and start
it again on the same port and data."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[3]
SDK = ROOT / "sdk" / "python"
T = TypeVar("T")


def herald_binary() -> Path:
    if os.environ.get("HERALD_BIN"):
        return Path(os.environ["HERALD_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    binary = target / "debug" / "herald"
    if not binary.exists():
        subprocess.run(["cargo", "build", "--bin", "herald"], cwd=ROOT, check=True, timeout=1200)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Herald:
    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        self.env.update(
            HERALD_ADDR=self.url,
            HERALD_DATA_DIR=str(workdir / "data"),
            HERALD_JWT_SECRET=secrets.token_hex(32),
            HERALD_SWEEP_INTERVAL="1s",
            HERALD_LOG="info",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.boots = 0

    def start(self) -> None:
        self.boots += 1
        log = open(self.workdir / f"herald-{self.boots}.log", "wb")
        self.proc = subprocess.Popen([str(self.binary)], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"herald exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{self.url}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"herald did not become healthy in 30 s: {self.log_tail()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def token(self, sub: str, role: str) -> str:
        out = subprocess.run(
            [str(self.binary), "token", "--sub", sub, "--role", role],
            env=self.env,
            capture_output=True,
            check=True,
            timeout=30,
        )
        return out.stdout.decode().strip()

    def log_tail(self) -> str:
        logs = sorted(self.workdir.glob("herald-*.log"))
        return logs[-1].read_text(errors="replace")[-3000:] if logs else ""


@pytest.fixture
def herald(tmp_path: Path) -> Iterator[Herald]:
    h = Herald(herald_binary(), tmp_path)
    h.start()
    yield h
    h.stop()


@pytest.fixture
def agent_token(herald: Herald) -> str:
    return herald.token("executor", "agent")


@pytest.fixture
def admin_token(herald: Herald) -> str:
    return herald.token("alice", "admin")


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 15.0, interval: float = 0.05) -> T:
    """Calls ``check`` until it returns a truthy value (or raises only AssertionError)."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = await check()
            if value:
                return value
        except AssertionError as e:
            last = e
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true within {timeout} s") from last
        await asyncio.sleep(interval)


def python_process(script: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(script)],
        env={**os.environ, **env},
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
    )


@pytest.fixture
async def run_executor() -> AsyncIterator[Callable[[Any], Awaitable[Any]]]:
    """Starts ``executor.serve()`` as a task and waits until it is attached;
    stops every one started at the end of the test."""
    started: list[tuple[Any, asyncio.Task[None]]] = []

    async def start(executor: Any) -> Any:
        t = asyncio.create_task(executor.serve())
        started.append((executor, t))
        await asyncio.wait_for(executor.wait_attached(), 15)
        return executor

    yield start
    for ex, t in started:
        ex.stop()
        await asyncio.wait_for(asyncio.gather(t, return_exceptions=True), 15)
