"""The bundled ModelsLab emulator, exercised over real HTTP as a client would see it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import UnidentifiedImageError

from django_modelslab.testing import Emulator, Fault, draw_image

from .helpers import opened

KEY = "emulator-test-key"
BODY = {"key": KEY, "prompt": "a red fox in snow", "model_id": "flux"}


@pytest.fixture
def emu(emulator_server: Emulator) -> Emulator:
    """The session emulator, reset to its constructor knobs (no Django settings needed)."""
    emulator_server.reset()
    return emulator_server


@pytest.fixture
def api(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.base_url, timeout=5) as client:
        yield client


def post_text2img(api: httpx.Client, **fields: Any) -> httpx.Response:
    return api.post("/v6/images/text2img", json={**BODY, **fields})


def fetch(api: httpx.Client, job_id: int | str) -> dict[str, Any]:
    response = api.post(f"/v6/images/fetch/{job_id}", json={"key": KEY})
    assert response.status_code == 200
    return response.json()


def wait_until(predicate: Any, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# --- the happy paths ------------------------------------------------------------------------


def test_success_answers_at_once_with_downloadable_images(emu: Emulator, api: httpx.Client):
    response = post_text2img(api, samples=2, seed=1234, track_id="req-42", width=640, height=384)

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success"
    assert isinstance(body["id"], int)
    assert isinstance(body["generationTime"], float)
    assert len(body["output"]) == len(body["proxy_links"]) == 2
    meta = body["meta"]
    assert meta["prompt"] == "a red fox in snow"
    assert meta["model_id"] == "flux"
    assert (meta["W"], meta["H"], meta["n_samples"], meta["steps"]) == (640, 384, 2, 30)
    assert (meta["seed"], meta["track_id"], meta["webhook"]) == (1234, "req-42", None)
    assert body["output"][0].startswith(f"http://127.0.0.1:{emu.port}/generations/")
    assert body["output"][0].endswith(f"{meta['file_prefix']}-0.png")

    for url, proxy in zip(body["output"], body["proxy_links"], strict=True):
        download = api.get(url)
        assert download.status_code == 200
        assert download.headers["content-type"] == "image/png"
        assert int(download.headers["content-length"]) == len(download.content)
        assert opened(download.content).size == (640, 384)
        assert download.content == emu.output_bytes(url)
        assert api.get(proxy).content == download.content
    assert body["output"][0] != body["output"][1]
    assert emu.output_bytes(body["output"][0]) != emu.output_bytes(body["output"][1])

    assert emu.calls["text2img"] == 1
    assert emu.calls["download"] == 4
    assert emu.calls["fetch"] == 0
    assert emu.requests[0][0] == "text2img"
    assert emu.requests[0][1]["key"] == "***"
    assert KEY not in json.dumps(emu.requests)
    job = emu.jobs[str(body["id"])]
    assert (job.status, job.seed, job.output_urls) == ("success", 1234, body["output"])


def test_random_seed_is_reported_and_images_are_deterministic(emu: Emulator, api: httpx.Client):
    first = post_text2img(api).json()
    seed = first["meta"]["seed"]
    assert isinstance(seed, int)

    again = post_text2img(api, seed=seed).json()
    other = post_text2img(api, seed=seed + 1).json()
    first_bytes = api.get(first["output"][0]).content
    assert api.get(again["output"][0]).content == first_bytes
    assert api.get(other["output"][0]).content != first_bytes
    assert draw_image("a red fox in snow", seed, 512, 512) == first_bytes


def test_sample_n_uses_seed_plus_n(emu: Emulator, api: httpx.Client):
    body = post_text2img(api, seed=10, samples=2, width=256, height=256).json()
    single = post_text2img(api, seed=11, width=256, height=256).json()
    assert emu.output_bytes(body["output"][1]) == emu.output_bytes(single["output"][0])


def test_draw_image_formats_and_speed():
    png = draw_image("speed", 1, 512, 512)
    jpeg = draw_image("speed", 1, 512, 512, "jpeg")
    assert opened(png).format == "PNG"
    assert opened(jpeg).format == "JPEG"
    started = time.perf_counter()
    draw_image("speed", 2, 512, 512)
    assert time.perf_counter() - started < 0.1
    with pytest.raises(ValueError):
        draw_image("x", 1, 512, 512, "gif")


def test_jpeg_outputs(emu: Emulator, api: httpx.Client):
    emu.image_format = "jpeg"
    body = post_text2img(api).json()
    assert body["output"][0].endswith("-0.jpg")
    download = api.get(body["output"][0])
    assert download.headers["content-type"] == "image/jpeg"
    assert opened(download.content).format == "JPEG"


def test_processing_then_fetch_path_form(emu: Emulator, api: httpx.Client):
    emu.mode = "processing"
    emu.eta = 0.1
    body = post_text2img(api, track_id="t-1").json()

    assert body["status"] == "processing"
    assert isinstance(body["id"], int)
    assert body["eta"] == 0.1
    assert body["output"] == []
    assert body["messege"] == "Try to fetch request after seconds estimated"
    assert body["fetch_result"] == f"{emu.base_url}/v6/images/fetch/{body['id']}"
    assert body["meta"]["track_id"] == "t-1"
    assert len(body["future_links"]) == 1
    assert api.get(body["future_links"][0]).status_code == 404  # not there yet

    pending = api.post(body["fetch_result"], json={"key": KEY}).json()
    assert pending["status"] == "processing"
    assert pending["messege"] == "try again later."
    assert pending["output"] == ""

    time.sleep(0.1)
    done = fetch(api, body["id"])
    assert done["status"] == "success"
    assert done["id"] == body["id"]
    assert done["output"] == body["future_links"]
    assert api.get(done["output"][0]).status_code == 200
    assert emu.calls["fetch"] == 2


def test_answer_fields_set_odd_figures_in_success_answers(emu: Emulator, api: httpx.Client):
    emu.configure(answer_fields={"cost": "1e30", "eta": float("inf"), "meta": {"seed": 1e30}})
    emu.mode = "processing"
    emu.eta = 0
    emu.pending_fetches = 0

    job = post_text2img(api, seed=3, track_id="t-1").json()
    assert "cost" not in job  # processing answers are left as they were
    done = api.post(f"/v6/images/fetch/{job['id']}", json={"key": KEY})

    assert b'"eta": Infinity' in done.content  # sent as given: non-standard JSON
    body = json.loads(done.content)
    assert (body["cost"], body["meta"]["seed"]) == ("1e30", 1e30)
    assert body["meta"]["track_id"] == "t-1"  # the rest of the meta is still echoed
    with pytest.raises(ValueError, match="answer_fields"):
        emu.configure(answer_fields={"meta": "seed"})


def test_fetch_body_form_with_string_request_id(emu: Emulator, api: httpx.Client):
    emu.mode = "processing"
    emu.eta = 0
    emu.pending_fetches = 0
    job_id = post_text2img(api).json()["id"]

    response = api.post("/v6/images/fetch", json={"key": KEY, "request_id": str(job_id)})

    assert response.json()["status"] == "success"
    assert emu.requests[-1] == ("fetch", {"key": "***", "request_id": str(job_id)})


def test_fetch_waits_for_eta_and_pending_fetches(emu: Emulator, api: httpx.Client):
    emu.mode = "processing"
    emu.eta = 0.3
    emu.pending_fetches = 2
    job_id = post_text2img(api).json()["id"]

    assert [fetch(api, job_id)["status"] for _ in range(3)] == ["processing"] * 3  # eta not up
    time.sleep(0.3)
    assert fetch(api, job_id)["status"] == "success"
    assert fetch(api, job_id)["status"] == "success"


@pytest.mark.parametrize("as_200", [False, True])
def test_unknown_fetch_id(emu: Emulator, api: httpx.Client, as_200: bool):
    emu.errors_as_200 = as_200
    for response in (
        api.post("/v6/images/fetch/999", json={"key": KEY}),
        api.post("/v6/images/fetch/not-a-number", json={"key": KEY}),
        api.post("/v6/images/fetch", json={"key": KEY}),
    ):
        assert response.status_code == (200 if as_200 else 404)
        assert response.json() == {"status": "error", "message": "Request not found"}


# --- validation and coercion ----------------------------------------------------------------

INVALID = [
    ({"prompt": None}, "The prompt field is required."),
    ({"prompt": "  "}, "The prompt field is required."),
    ({"model_id": ""}, "The model id field is required."),
    ({"width": 2048}, "The width must not be greater than 1024."),
    ({"height": "1032"}, "The height must not be greater than 1024."),
    ({"width": 128}, "The width must be at least 256."),
    ({"width": "wide"}, "The width must be an integer."),
    ({"samples": 5}, "The samples must be between 1 and 4."),
    ({"samples": "0"}, "The samples must be between 1 and 4."),
    ({"num_inference_steps": 51}, "The num inference steps must be between 1 and 50."),
    ({"guidance_scale": "30"}, "The guidance scale must be between 1 and 20."),
    ({"seed": "lucky"}, "The seed must be an integer."),
    ({"safety_checker": "maybe"}, "The selected safety checker is invalid."),
    ({"webhook": "not a url"}, "The webhook must be a valid URL."),
]


@pytest.mark.parametrize(("fields", "message"), INVALID)
def test_validation_errors(emu: Emulator, api: httpx.Client, fields: dict, message: str):
    response = post_text2img(api, **fields)
    assert response.status_code == 400
    assert response.json() == {"status": "error", "message": message}
    assert emu.jobs == {}


def test_validation_errors_as_200(emu: Emulator, api: httpx.Client):
    emu.errors_as_200 = True
    response = api.post("/v6/images/text2img", json={"key": KEY, "model_id": "flux"})
    assert response.status_code == 200
    assert response.json() == {"status": "error", "message": "The prompt field is required."}


def test_numbers_as_strings_and_yes_no_flags(emu: Emulator, api: httpx.Client):
    body = post_text2img(
        api,
        width="768",
        height="512",
        samples="2",
        num_inference_steps="20",
        guidance_scale="7",
        seed="42",
        safety_checker="yes",
        enhance_prompt=False,
        scheduler="UniPCMultistepScheduler",
    ).json()

    meta = body["meta"]
    assert (meta["W"], meta["H"], meta["n_samples"], meta["steps"]) == (768, 512, 2, 20)
    assert (meta["guidance_scale"], meta["seed"]) == (7.0, 42)
    assert (meta["safety_checker"], meta["enhance_prompt"]) == ("yes", "no")
    assert meta["scheduler"] == "UniPCMultistepScheduler"
    assert opened(api.get(body["output"][1]).content).size == (768, 512)
    assert emu.jobs[str(body["id"])].params["samples"] == 2


def test_bad_json_and_unknown_routes(emu: Emulator, api: httpx.Client):
    response = api.post(
        "/v6/images/text2img", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["status"] == "error"
    assert api.post("/v6/images/nothing", json=BODY).status_code == 404
    assert api.get("/v6/images/text2img").status_code == 405
    assert api.get(f"{emu.origin}/generations/unknown-0.png").status_code == 404


# --- API keys -------------------------------------------------------------------------------


def test_any_key_accepted_by_default(emu: Emulator, api: httpx.Client):
    assert api.post("/v6/images/text2img", json={"prompt": "x", "model_id": "flux"}).is_success


def test_api_keys_enforced_in_body_or_header(emu: Emulator, api: httpx.Client):
    emu.api_keys = {KEY}
    unkeyed = {"prompt": "x", "model_id": "flux"}

    assert api.post("/v6/images/text2img", json={**unkeyed, "key": KEY}).status_code == 200
    assert api.post("/v6/images/text2img", json=unkeyed, headers={"key": KEY}).status_code == 200
    for response in (
        api.post("/v6/images/text2img", json={**unkeyed, "key": "wrong"}),
        api.post("/v6/images/text2img", json=unkeyed),
        api.post("/v6/images/fetch/1", json={"key": "wrong"}),
    ):
        assert response.status_code == 401
        assert response.json() == {"status": "error", "message": "Invalid API key"}

    emu.errors_as_200 = True
    response = api.post("/v6/images/text2img", json={**unkeyed, "key": "wrong"})
    assert (response.status_code, response.json()["status"]) == (200, "error")


def test_constructor_knobs_and_reset(emu: Emulator):
    with Emulator(mode="processing", api_keys=["only"], errors_as_200=True) as other:
        assert other.base_url == f"http://127.0.0.1:{other.port}/api"
        response = httpx.post(f"{other.base_url}/v6/images/text2img", json=BODY)
        assert (response.status_code, response.json()["message"]) == (200, "Invalid API key")
        ok = httpx.post(f"{other.base_url}/v6/images/text2img", json={**BODY, "key": "only"})
        assert ok.json()["status"] == "processing"
        other.mode = "success"
        other.add_fault("*", Fault.http_error())
        other.reset()
        assert (other.mode, other.api_keys, other.jobs, len(other.faults)) == (
            "processing",
            {"only"},
            {},
            0,
        )
        assert other.calls["text2img"] == 0
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{other.base_url}/v6/images/text2img", json=BODY)
    with pytest.raises(ValueError):
        Emulator(mode="sometimes")


def test_url_expiry(emu: Emulator, api: httpx.Client):
    emu.url_ttl = 0.2
    url = post_text2img(api).json()["output"][0]
    assert api.get(url).status_code == 200
    time.sleep(0.25)
    assert api.get(url).status_code == 404
    assert emu.output_bytes(url)  # the emulator still knows what it served


# --- faults ---------------------------------------------------------------------------------


def test_rate_limit_then_normal(emu: Emulator, api: httpx.Client):
    emu.add_fault("text2img", Fault.rate_limit(retry_after=3), times=2)

    for _ in range(2):
        response = post_text2img(api)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"
        assert response.json()["retry_after"] == 3
        assert response.json()["status"] == "error"
    assert post_text2img(api).json()["status"] == "success"
    assert emu.calls["text2img"] == 3


def test_faults_run_as_a_script_in_order(emu: Emulator, api: httpx.Client):
    emu.add_fault("text2img", Fault.http_error(503, "Service Unavailable"))
    emu.add_fault("*", Fault.error_200("Server busy"))
    emu.add_fault("text2img", Fault.insufficient_credits())

    first, second, third, fourth = (post_text2img(api) for _ in range(4))
    assert (first.status_code, first.json()["message"]) == (503, "Service Unavailable")
    assert (second.status_code, second.json()) == (
        200,
        {"status": "error", "message": "Server busy"},
    )
    assert third.status_code == 402
    assert fourth.json()["status"] == "success"


def test_download_faults_are_not_used_up_by_api_calls(emu: Emulator, api: httpx.Client):
    emu.add_fault("*", Fault.expired())
    url = post_text2img(api).json()["output"][0]
    assert api.get(url).status_code == 404
    assert api.get(url).status_code == 200


def test_add_fault_rejects_nonsense(emu: Emulator):
    with pytest.raises(ValueError):
        emu.add_fault("text2img", Fault.corrupt())
    with pytest.raises(ValueError):
        emu.add_fault("download", Fault.never_finish())
    with pytest.raises(ValueError):
        emu.add_fault("img2txt", Fault.delay(1))
    with pytest.raises(ValueError):
        Fault("explode")


def test_failed_on_generate(emu: Emulator, api: httpx.Client):
    emu.add_fault("text2img", Fault.failed("NSFW content"))
    body = post_text2img(api).json()
    assert body["status"] == "processing"  # accepted even in success mode

    answer = fetch(api, body["id"])
    assert answer == {"status": "failed", "id": body["id"], "message": "NSFW content"}
    assert emu.jobs[str(body["id"])].status == "failed"
    assert api.get(body["future_links"][0]).status_code == 404


def test_failed_on_fetch(emu: Emulator, api: httpx.Client):
    emu.mode = "processing"
    job_id = post_text2img(api).json()["id"]
    emu.add_fault("fetch", Fault.failed("GPU fell over"))
    assert fetch(api, job_id)["status"] == "failed"
    assert fetch(api, job_id)["message"] == "GPU fell over"  # stays failed


def test_never_finish(emu: Emulator, api: httpx.Client):
    emu.eta = 0
    emu.pending_fetches = 0
    emu.add_fault("text2img", Fault.never_finish())
    job_id = post_text2img(api).json()["id"]
    assert [fetch(api, job_id)["status"] for _ in range(3)] == ["processing"] * 3


def test_delay_makes_clients_time_out(emu: Emulator, api: httpx.Client):
    emu.add_fault("text2img", Fault.delay(0.4))
    with pytest.raises(httpx.ReadTimeout):
        api.post("/v6/images/text2img", json=BODY, timeout=0.1)
    started = time.perf_counter()
    assert post_text2img(api).status_code == 200
    assert time.perf_counter() - started < 0.3


def test_drop_connection(emu: Emulator, api: httpx.Client):
    emu.add_fault("fetch", Fault.drop_connection())
    with pytest.raises(httpx.RemoteProtocolError):
        api.post("/v6/images/fetch/1", json={"key": KEY})
    assert emu.calls["fetch"] == 1
    assert api.post("/v6/images/fetch/1", json={"key": KEY}).status_code == 404


def test_cut_download(emu: Emulator, api: httpx.Client):
    url = post_text2img(api).json()["output"][0]
    emu.add_fault("download", Fault.cut_download(after_bytes=100))
    with pytest.raises(httpx.RemoteProtocolError), api.stream("GET", url) as response:
        assert int(response.headers["content-length"]) == len(emu.output_bytes(url))
        response.read()
    assert api.get(url).content == emu.output_bytes(url)


def test_slow_download(emu: Emulator, api: httpx.Client):
    url = post_text2img(api, width=256, height=256).json()["output"][0]
    size = len(emu.output_bytes(url))
    rate = size * 4  # about a quarter of a second
    emu.add_fault("download", Fault.slow_download(bytes_per_second=rate))
    started = time.perf_counter()
    response = api.get(url)
    assert response.content == emu.output_bytes(url)
    assert time.perf_counter() - started >= 0.2


def test_corrupt_download(emu: Emulator, api: httpx.Client):
    url = post_text2img(api).json()["output"][0]
    emu.add_fault("download", Fault.corrupt())
    response = api.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    with pytest.raises(UnidentifiedImageError):
        opened(response.content)


def test_expired_fault_and_download_errors(emu: Emulator, api: httpx.Client):
    url = post_text2img(api).json()["output"][0]
    emu.add_fault("download", Fault.expired())
    emu.add_fault("download", Fault.rate_limit(retry_after=2))
    emu.add_fault("download", Fault.http_error(502, "Bad Gateway"))
    assert [api.get(url).status_code for _ in range(4)] == [404, 429, 502, 200]


# --- control API ----------------------------------------------------------------------------


def test_control_api(emu: Emulator, api: httpx.Client):
    control = httpx.Client(base_url=f"{emu.origin}/_emulator")

    config = control.post("/config", json={"mode": "processing", "latency": 0.01}).json()
    assert config["config"]["mode"] == "processing"
    assert emu.mode == "processing"
    assert control.post("/config", json={"colour": "blue"}).status_code == 400
    assert control.post("/config", json={"mode": "maybe"}).status_code == 400

    added = control.post(
        "/faults", json={"route": "text2img", "kind": "rate_limit", "times": 2, "retry_after": 5}
    )
    assert added.status_code == 200
    [pending] = added.json()["faults"]
    assert (pending["route"], pending["kind"], pending["times"]) == ("text2img", "rate_limit", 2)
    assert pending["retry_after"] == 5
    assert control.post("/faults", json={"kind": "explode"}).status_code == 400
    assert control.post("/faults", json={"kind": "delay", "speed": 1}).status_code == 400
    assert post_text2img(api).headers["retry-after"] == "5"

    stats = control.get("/stats").json()
    assert stats["calls"] == {"text2img": 1}
    assert stats["jobs"] == 0
    assert len(stats["faults"]) == 1

    assert control.post("/reset").json() == {"status": "ok"}
    assert (emu.mode, emu.calls["text2img"], len(emu.faults)) == ("success", 0, 0)
    assert control.get("/stats").json()["config"]["latency"] == 0.0


# --- webhooks -------------------------------------------------------------------------------


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.arrived:
                    receiver.bodies.append(json.loads(data))
                    receiver.arrived.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook?secret=s3"

    def wait_for(self, n: int, timeout: float = 3.0) -> list[dict[str, Any]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.bodies) >= n, timeout)
            return list(self.bodies)


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    server = _Receiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_webhook_on_success_with_duplicates(emu: Emulator, api: httpx.Client, receiver):
    emu.webhook_duplicates = 1
    body = post_text2img(api, webhook=receiver.url, track_id="req-7").json()

    deliveries = receiver.wait_for(2)
    assert len(deliveries) == 2
    assert deliveries[0] == deliveries[1]
    hook = deliveries[0]
    assert (hook["status"], hook["id"], hook["track_id"]) == ("success", body["id"], "req-7")
    assert hook["output"] == body["output"]
    assert hook["meta"]["webhook"] == receiver.url
    assert wait_until(lambda: len(emu.webhook_deliveries) == 2)
    assert [d["status"] for d in emu.webhook_deliveries] == [204, 204]
    assert emu.calls["webhook"] == 2


def test_webhook_for_processing_jobs_without_fetching(emu: Emulator, api: httpx.Client, receiver):
    emu.mode = "processing"
    emu.eta = 0.05
    ok = post_text2img(api, webhook=receiver.url, track_id="a").json()
    emu.add_fault("text2img", Fault.failed("out of GPUs"))
    bad = post_text2img(api, webhook=receiver.url, track_id="b").json()

    hooks = {hook["track_id"]: hook for hook in receiver.wait_for(2)}
    assert hooks["a"]["status"] == "success"
    assert hooks["a"]["id"] == ok["id"]
    assert hooks["b"] == {
        "status": "failed",
        "id": bad["id"],
        "message": "out of GPUs",
        "track_id": "b",
    }
    assert fetch(api, ok["id"])["status"] == "success"
    assert emu.calls["fetch"] == 1


# --- server behaviour -----------------------------------------------------------------------


def test_server_is_threaded(emu: Emulator):
    emu.latency = 0.3
    clients = [httpx.Client(base_url=emu.base_url, timeout=5) for _ in range(2)]

    def call(client: httpx.Client) -> int:
        return client.post("/v6/images/text2img", json=BODY).status_code

    with ThreadPoolExecutor(2) as pool:
        started = time.perf_counter()
        statuses = list(pool.map(call, clients))
        elapsed = time.perf_counter() - started
    for client in clients:
        client.close()
    assert statuses == [200, 200]
    assert 0.3 <= elapsed < 0.55


def test_cli_starts_answers_and_stops_on_ctrl_c():
    command = [sys.executable, "-m", "django_modelslab.testing", "--port", "0"]
    command += ["--mode", "processing", "--ttl", "60", "--latency", "0"]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base_url = proc.stdout.readline().decode().strip()
        assert base_url.startswith("http://127.0.0.1:")
        assert base_url.endswith("/api")
        body = httpx.post(f"{base_url}/v6/images/text2img", json=BODY, timeout=5).json()
        assert body["status"] == "processing"
        stats = httpx.get(base_url.removesuffix("/api") + "/_emulator/stats").json()
        assert stats["config"]["url_ttl"] == 60
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
