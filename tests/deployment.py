"""A production deployment on one machine, for tests: a real PostgreSQL server (Debian's
``postgresql``), moto's S3 server, and Dagster's webserver, daemon and a gRPC code server as
separate processes, all on 127.0.0.1, configured by ``deploy/production/dagster.yaml``.

The fakes are at external edges only: moto stands in for S3. PostgreSQL, Dagster and the code
location are the real programs.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs (Debian keeps them off PATH)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, ready, timeout: float = 60, process: subprocess.Popen | None = None,
          log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: "
                               + (log.read_text()[-3000:] if log else ""))
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{what} not ready in {timeout:.0f}s: "
                       + (log.read_text()[-3000:] if log and log.exists() else ""))


class Postgres:
    """A PostgreSQL cluster in a temporary folder, owned by the ``postgres`` user when run as
    root (the server refuses to run as root), trusting local TCP connections."""

    def __init__(self, bin_dir: Path, user: str = "dagster", db: str = "dagster"):
        self.bin, self.user, self.db = bin_dir, user, db
        self.folder = Path(tempfile.mkdtemp(prefix="prox-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = free_port()
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.data), "-U", user, "-A", "trust", "--no-sync")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", user, db)

    def _run(self, program: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bin / program), *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.folder)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "start", "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                  "-c fsync=off -c max_connections=200")

    def stop(self, mode: str = "fast") -> None:
        """``immediate``: the server goes away at once, as a crashed or lost database does."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def env(self) -> dict[str, str]:
        return {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.port),
                "DAGSTER_PG_USER": self.user, "DAGSTER_PG_PASSWORD": "unused-trust-auth",
                "DAGSTER_PG_DB": self.db}


class Moto:
    """moto's S3 server (the one fake: S3 itself)."""

    def __init__(self, folder: Path):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=open(folder / "moto.log", "wb"), stderr=subprocess.STDOUT)
        _wait("moto", lambda: urllib.request.urlopen(self.endpoint, timeout=1), 30, self.process)

    @property
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def production_instance_yaml(home: Path, overrides: dict) -> dict:
    """``deploy/production/dagster.yaml`` into ``home``, with ``overrides`` (top-level keys
    merged one level deep) for what a one-machine test must change."""
    config = yaml.safe_load((ROOT / "deploy" / "production" / "dagster.yaml").read_text())
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return config


class Dagster:
    """A gRPC code server for the project's code location, the webserver and the daemon, each its
    own process (and process group) with the environment ``env``."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.folder, self.env = folder, env
        self.processes: dict[str, subprocess.Popen] = {}
        grpc_port, web_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{web_port}"
        workspace = folder / "workspace.yaml"
        workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
            "host": "127.0.0.1", "port": grpc_port, "location_name": "prox"}}]}))
        self._start("grpc", [str(BIN / "dagster"), "api", "grpc", "-m",
                             "prox_dagster.definitions", "-a", "defs", "-h", "127.0.0.1",
                             "-p", str(grpc_port)])
        _wait("the gRPC code server", lambda: subprocess.run(
            [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(grpc_port)],
            capture_output=True, env=env).returncode == 0, 180, self.processes["grpc"],
            self.log("grpc"))
        self._start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)])
        self._start("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p",
                                  str(web_port), "-w", str(workspace)])
        _wait("the webserver", lambda: urllib.request.urlopen(f"{self.url}/server_info",
                                                              timeout=5), 180,
              self.processes["webserver"], self.log("webserver"))

    def log(self, name: str) -> Path:
        return self.folder / f"{name}.log"

    def _start(self, name: str, command: list[str]) -> None:
        self.processes[name] = subprocess.Popen(
            command, cwd=ROOT, env=self.env, start_new_session=True,
            stdout=open(self.log(name), "wb"), stderr=subprocess.STDOUT)

    def close(self) -> None:
        for process in self.processes.values():
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
