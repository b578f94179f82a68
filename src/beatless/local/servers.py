"""Throwaway servers on free loopback ports, for the local runner and tests.

Each server lives in its own temporary directory, is started with its own
pidfile and is stopped by PID; nothing is left running or listening on a
fixed port. PostgreSQL's initdb refuses to run as root, so as root the
cluster is created and run as the ``postgres`` OS user through ``runuser``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def _terminate(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(grace)


def _started(proc: subprocess.Popen[bytes], wait: Callable[[], None]) -> None:
    """`wait` for `proc` to serve; on any failure or interrupt stop it (it runs in its own
    session: nothing else would) and re-raise."""
    try:
        wait()
    except BaseException:
        proc.kill()
        proc.wait(10)
        raise


def _require_binary(name: str, hint: str) -> str:
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found on PATH; {hint}")
    return found


class RedisServer:
    """A redis-server on a free port: without persistence in a temporary directory, or with
    its append-only file in `data_dir` (kept: a later server on it has the same data)."""

    def __init__(
        self, port: int | None = None, password: str | None = None, data_dir: Path | None = None
    ) -> None:
        self.binary = _require_binary("redis-server", "run scripts/setup.sh (installs it with apt)")
        self.port = port or free_port()
        self.password = password
        self.persistent = data_dir is not None
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
        self.dir = data_dir or Path(tempfile.mkdtemp(prefix="beatless-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--dir", str(self.dir),
            "--maxmemory-policy", "noeviction",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        log = (self.dir / "redis.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _started(self.proc, lambda: _wait_for_port(self.port, 10, self.proc))
        return self

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if not self.persistent:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class PostgresServer:
    """A PostgreSQL cluster tuned for throwaway use: in a temporary directory, or in `base`
    (kept: a later server on it starts on the same cluster instead of a new one)."""

    def __init__(self, port: int | None = None, bindir: str | None = None, base: Path | None = None) -> None:
        self.bindir = Path(bindir) if bindir else self._find_bindir()
        self.port = port or free_port()
        self.persistent = base is not None
        if base is not None:
            base.mkdir(parents=True, exist_ok=True)
        self.base = base or Path(tempfile.mkdtemp(prefix="beatless-pg-"))
        self.data = self.base / "data"
        self.user = "postgres"
        self._as_root = hasattr(os, "geteuid") and os.geteuid() == 0

    @staticmethod
    def _find_bindir() -> Path:
        pg_ctl = shutil.which("pg_ctl")
        if pg_ctl:
            return Path(os.path.realpath(pg_ctl)).parent
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
        if candidates:
            return candidates[0].parent
        raise RuntimeError("PostgreSQL server binaries not found; run scripts/setup.sh")

    def _run(self, args: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        if self._as_root:
            args = ["runuser", "-u", "postgres", "--", *args]
        # Its own session: a Ctrl-C in the terminal reaches this process, which stops the server.
        return subprocess.run(args, check=True, capture_output=True, start_new_session=True, **kwargs)  # type: ignore[call-overload, no-any-return]

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> PostgresServer:
        if self._as_root:
            shutil.chown(self.base, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            self._run([
                str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
                "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions",
            ])  # fmt: skip
        opts = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        try:
            self._run([
                str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts,
                "-l", str(self.base / "postgres.log"), "-w", "-t", "30", "start",
            ])  # fmt: skip
        except BaseException:  # Ctrl-C while it starts: the server, in its own session, would outlive us
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])
            raise
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        if not self.persistent:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class MotoServer:
    """moto's HTTP server in a child process: the AWS endpoint for every process
    that gets ``AWS_ENDPOINT_URL`` (workers, the local runner, subprocess tests).
    It serves one request at a time (`beatless.local.moto_server`), so conditional
    writes are atomic as in AWS."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="beatless-moto-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        log = (self.dir / "moto.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "beatless.local.moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _started(self.proc, lambda: _wait_for_port(self.port, 30, self.proc))
        return self

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def aws_environment(endpoint_url: str, region: str = "us-east-1") -> dict[str, str]:
    """Environment variables that point boto3 (in any process) at a moto server."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
    }


@contextlib.contextmanager
def environ(updates: dict[str, str | None]) -> Iterator[None]:
    """Temporarily set (None: unset) environment variables in this process."""
    saved = {key: os.environ.get(key) for key in updates}
    for key, value in updates.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (urllib.error.URLError, OSError):
        return False


class GraphNodeServer:
    """A graph node (`beatless graph-node`) in a child process on a free port, its data in
    `data_dir` (kept across restarts of this object: stop, kill -9, start again)."""

    def __init__(
        self,
        env: dict[str, str],
        data_dir: Path,
        api_key: str,
        *,
        port: int | None = None,
        log: Path | None = None,
        api_key_secret_arn: str | None = None,
    ) -> None:
        """`api_key` is what requests carry; the node reads it from `api_key_secret_arn`
        (Secrets Manager, as deployed) when given, else from `GRAPH_API_KEY`."""
        self.port = port or free_port()
        self.api_key = api_key
        self.data_dir = data_dir
        self.log = log or data_dir.parent / f"graph-node-{self.port}.log"
        key_source = (
            {"GRAPH_API_KEY_SECRET_ARN": api_key_secret_arn}
            if api_key_secret_arn
            else {"GRAPH_API_KEY": api_key}
        )
        self.env = {
            **{k: v for k, v in env.items() if k not in ("GRAPH_API_KEY", "GRAPH_API_KEY_SECRET_ARN")},
            "GRAPH_DATA_DIR": str(data_dir),
            "GRAPH_NODE_HOST": "127.0.0.1",
            "GRAPH_NODE_PORT": str(self.port),
            **key_source,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> GraphNodeServer:
        from beatless.graphs.node.app import wait_until_healthy

        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "beatless.cli", "graph-node"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until_healthy(self.url, self.api_key, timeout)
        except TimeoutError:
            self.kill()
            raise RuntimeError(f"graph node did not start:\n{self.log.read_text()[-3000:]}") from None
        except BaseException:  # Ctrl-C while it starts: its own session would outlive us
            self.kill()
            raise
        return self

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM (the node closes its databases), SIGKILL after `grace` seconds."""
        proc = self.proc
        _terminate(proc, grace)
        self.proc = None
        return None if proc is None else proc.returncode

    def kill(self) -> None:
        """kill -9: no chance to close anything."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> GraphNodeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
