"""Real storage servers on 127.0.0.1 for the DVC remote tests, started and stopped here.

- OpenSSH's sshd (Debian's openssh-server, installed with apt where allowed, as
  helpers_browser does for chromium), with a host key and a client key that the test makes
  with ssh-keygen: the remote is ``ssh://127.0.0.1:PORT/DIR``.
- moto's S3 server (``python -m moto.server``, what DVC's own tests use): the remote is
  ``s3://BUCKET/PATH`` at endpoint ``http://127.0.0.1:PORT`` with fake credentials.

Each gives a :class:`Remote`: what `dvc remote add` and `dvc remote modify --local` take
(credentials stay in the throw-away repos' .dvc/config.local), and a way to list and read
what a push stored there.
"""

from __future__ import annotations

import getpass
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

SSHD = "/usr/sbin/sshd"
S3_KEYS = {"access_key_id": "testing", "secret_access_key": "testing"}  # moto takes any


@dataclass
class Remote:
    """A DVC remote on a server of this module."""

    kind: str
    url: str  # `dvc remote add NAME URL`
    config: dict[str, str]  # `dvc remote modify NAME KEY VALUE` (endpoint and the like)
    credentials: dict[str, str]  # `dvc remote modify --local NAME KEY VALUE`, never committed
    files: Callable[[], set[str]]  # paths stored, relative to the remote's root (files/md5/…)
    read: Callable[[str], bytes]  # one of them


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(args: list[str], log: Path, ready: Callable[[], bool], what: str,
          timeout: float = 30) -> subprocess.Popen:
    """Starts a server logging to ``log`` (a file: a pipe nobody reads would fill and stall
    it) and polls ``ready`` every 0.1 s; fails with the log if it exits or is late."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            pytest.fail(f"{what} did not start (exit {proc.returncode}):\n"
                        f"{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# --------------------------------------------------------------------------- sshd

def may_install() -> bool:
    """Installing system packages is for CI (CI=true) or when asked, and needs root."""
    return (hasattr(os, "geteuid") and os.geteuid() == 0
            and (os.environ.get("CI") == "true" or os.environ.get("LSTMLM_INSTALL_SSHD") == "1"))


def sshd_binary() -> str:
    """Debian's sshd; installs openssh-server where allowed, else skips saying how."""
    if Path(SSHD).is_file():
        return SSHD
    if not may_install():
        pytest.skip("no sshd; to install Debian's openssh-server, run as root with CI=true or "
                    "LSTMLM_INSTALL_SSHD=1 (or `apt-get install openssh-server`)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-qq"],
                 ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "openssh-server"]):
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, timeout=900, env=env)
    return SSHD if Path(SSHD).is_file() else pytest.fail("apt-get installed no sshd")


def ssh_keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "lstmlm-tests",
                    "-f", str(path)], check=True, timeout=60)
    return path


def sshd_config(directory: Path, port: int) -> Path:
    """Keys-only login on 127.0.0.1 for the current user; SFTP in-process."""
    config = directory / "sshd_config"
    config.write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1",
        f"HostKey {directory / 'host_key'}", f"PidFile {directory / 'sshd.pid'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        "StrictModes no",  # the key files live in a temp dir, not in ~/.ssh
        "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no",
        "PermitRootLogin prohibit-password",  # CI runs the tests as root
        "Subsystem sftp internal-sftp", "LogLevel ERROR", ""]), encoding="utf-8")
    return config


def ssh_banner(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def start_sshd(directory: Path) -> tuple[subprocess.Popen, int]:
    if importlib.util.find_spec("dvc_ssh") is None:
        pytest.skip("SSH remote tests need dvc-ssh (requirements-remote.txt; make test)")
    binary = sshd_binary()
    directory.mkdir(parents=True, exist_ok=True)
    ssh_keygen(directory / "host_key")
    client = ssh_keygen(directory / "client_key")
    shutil.copy(client.with_suffix(".pub"), directory / "authorized_keys")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    port = free_port()
    proc = start([binary, "-D", "-e", "-f", str(sshd_config(directory, port))],
                 directory / "sshd.log", lambda: ssh_banner(port), f"sshd on 127.0.0.1:{port}")
    return proc, port


def local_files(root: Path) -> Callable[[], set[str]]:
    return lambda: {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def ssh_remote(directory: Path, port: int) -> Remote:
    """A DVC remote in ``directory``/store, reached through the sshd on ``port``."""
    store = directory / "store"
    store.mkdir()
    return Remote(
        kind="ssh", url=f"ssh://127.0.0.1:{port}{store}", config={},
        credentials={"user": getpass.getuser(), "keyfile": str(directory / "client_key")},
        files=local_files(store), read=lambda path: (store / path).read_bytes())


# --------------------------------------------------------------------------- S3 (moto)

def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def start_moto(directory: Path) -> tuple[subprocess.Popen, str]:
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("dvc_s3") is None:
        pytest.skip("S3 tests need moto[server] and dvc-s3 (requirements-test.txt; make test)")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = start([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                 directory / "moto.log", lambda: http_ok(f"{endpoint}/moto-api/"),
                 f"moto on {endpoint}")
    return proc, endpoint


def s3_remote(endpoint: str, bucket: str = "lstmlm") -> Remote:
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=S3_KEYS["access_key_id"],
                          aws_secret_access_key=S3_KEYS["secret_access_key"])
    client.create_bucket(Bucket=bucket)
    prefix = "store/"

    def files() -> set[str]:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {obj["Key"][len(prefix):] for page in pages for obj in page.get("Contents", [])}

    def read(path: str) -> bytes:
        return client.get_object(Bucket=bucket, Key=prefix + path)["Body"].read()

    return Remote(kind="s3", url=f"s3://{bucket}/{prefix.rstrip('/')}",
                  config={"endpointurl": endpoint}, credentials=dict(S3_KEYS),
                  files=files, read=read)
