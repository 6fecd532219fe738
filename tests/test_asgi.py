"""The generating endpoints under ASGI: one uvicorn process serving callers that wait at once.

uvicorn runs ``tests.asgi`` in its own process on this test's database, emulator and media
directory. With the immediate task backend each call runs its own generation, awaiting
ModelsLab (``pipeline.arun``) instead of holding a thread on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.authtoken.models import Token

from django_modelslab.models import GenerationRequest

from .helpers import finished, process_env, wait_for
from .pgcluster import free_port

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CALLERS = 6
UVICORN = [sys.executable, "-m", "uvicorn", "tests.asgi:application", "--host", "127.0.0.1"]
UVICORN += ["--log-level", "warning"]


@dataclass
class Server:
    url: str
    pid: int

    def database_connections(self, database: str) -> int:
        """How many connections the server has open to the SQLite file ``database``."""
        fds = Path(f"/proc/{self.pid}/fd")
        return sum(1 for fd in fds.iterdir() if _target(fd) == database)


def _target(fd: Path) -> str | None:
    try:
        return os.readlink(fd)
    except OSError:  # closed meanwhile
        return None


@pytest.fixture
def server_env() -> dict[str, str]:
    """More environment for the server (tests/settings.py reads it)."""
    return {}


@pytest.fixture
def asgi_server(emulator, settings, media, server_env) -> Iterator[Server]:
    """uvicorn serving the test site."""
    port = free_port()
    server = subprocess.Popen(
        [*UVICORN, "--port", str(port)],
        cwd=ROOT,
        env=process_env(emulator, settings, **server_env),
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base_url}/api/modelslab/", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None, "uvicorn exited"
                assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
                time.sleep(0.1)
        yield Server(base_url, server.pid)
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def key() -> str:
    return Token.objects.create(user=User.objects.create_user("painter", is_staff=True)).key


def stored(media: Path, url: str) -> bytes:
    return (media / url.split("/media/", 1)[1]).read_bytes()


def test_calls_waiting_on_modelslab_hold_no_database_connection(asgi_server, key, emulator, media):
    emulator.latency = 3.0  # long enough to look at the server while every call waits
    database = str(connection.settings_dict["NAME"])

    async def generate_all() -> list[openai.types.ImagesResponse]:
        async with openai.AsyncOpenAI(
            base_url=f"{asgi_server.url}/api/modelslab/v1", api_key=key, max_retries=0, timeout=60
        ) as client:
            calls = (
                client.images.generate(prompt=f"lighthouse {n}", size="256x256")
                for n in range(CALLERS)
            )
            return await asyncio.gather(*calls)

    with ThreadPoolExecutor(1) as pool:
        answers = pool.submit(asyncio.run, generate_all())
        wait_for(lambda: emulator.stats()["in_flight"] == CALLERS)
        held = asgi_server.database_connections(database)
        answers = answers.result()

    assert held == 0  # a sync view holds one per caller, as long as ModelsLab takes
    assert emulator.stats()["peak_in_flight"] == CALLERS
    for answer in answers:
        (item,) = answer.data
        assert item.url.startswith(f"{asgi_server.url}/media/modelslab/")
        data = stored(media, item.url)
        assert hashlib.sha256(data).hexdigest() in item.url
    assert GenerationRequest.objects.filter(status="succeeded").count() == CALLERS


def test_rest_create_and_regenerate_run_the_generation_under_asgi(asgi_server, key, media):
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=f"{asgi_server.url}/api/modelslab/", headers=headers) as client:
        created = client.post("generations/", json={"prompt": "a harbour", "seed": 5})
        again = client.post(f"generations/{created.json()['id']}/regenerate/", json={})

    assert created.status_code == 201, created.text
    assert created.json()["status"] == "succeeded"
    assert again.status_code == 200, again.text
    body = again.json()
    assert body["status"] == "succeeded"
    current = [image for image in body["images"] if not image["superseded"]]
    assert len(current) == 1
    assert stored(media, current[0]["url"])  # the regenerated image is in storage


def test_an_error_is_answered_in_openais_shape_under_asgi(asgi_server):
    answer = httpx.post(
        f"{asgi_server.url}/api/modelslab/v1/images/generations",
        json={"prompt": "x"},
        headers={"Authorization": "Bearer sk-wrong"},
    )

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"


def test_a_caller_that_hangs_up_does_not_stop_its_generation(asgi_server, key, emulator, media):
    emulator.latency = 1.5
    database = str(connection.settings_dict["NAME"])

    with pytest.raises(httpx.ReadTimeout):  # the caller gives up while ModelsLab works
        httpx.post(
            f"{asgi_server.url}/api/modelslab/v1/images/generations",
            json={"prompt": "a lighthouse", "size": "256x256"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=httpx.Timeout(10, read=0.5),
        )

    generation = wait_for(lambda: finished(GenerationRequest.objects.get()), timeout=20)
    assert generation.status == "succeeded"
    (image,) = generation.images.all()
    assert (media / image.image.name).read_bytes()
    assert emulator.stats()["calls"]["text2img"] == 1
    wait_for(lambda: asgi_server.database_connections(database) == 0)


@pytest.mark.parametrize(
    "server_env", [{"MODELSLAB_TEST_TASKS": "db", "MODELSLAB_TEST_OPENAI_WAIT": "0.5,3"}]
)
def test_a_call_polling_a_worker_holds_no_connection_between_looks(asgi_server, key):
    database = str(connection.settings_dict["NAME"])  # no worker runs: the request stays queued

    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(
            httpx.post,
            f"{asgi_server.url}/api/modelslab/v1/images/generations",
            json={"prompt": "a lighthouse"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        wait_for(lambda: GenerationRequest.objects.filter(status="queued").exists())
        held = []
        for _ in range(5):
            time.sleep(0.2)
            held.append(asgi_server.database_connections(database))
        answer = answer.result()

    assert sum(held) <= 1  # a look (every 0.5 s) takes a millisecond; a held one would be 5
    assert answer.status_code == 504
    assert answer.json()["error"]["code"] == "timeout"
