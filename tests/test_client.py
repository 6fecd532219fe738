"""The ModelsLab client: wire quirks (httpx.MockTransport) and real HTTP against the emulator."""

from __future__ import annotations

import json
import logging
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from urllib.parse import quote, quote_plus

import httpx
import pytest

from django_modelslab import __version__
from django_modelslab.client import (
    AsyncModelsLabClient,
    ModelsLabClient,
    ProviderResponse,
    parse_response,
    redact,
)
from django_modelslab.conf import DEFAULTS
from django_modelslab.exceptions import (
    AmbiguousSubmission,
    AuthenticationFailed,
    GenerationFailed,
    InsufficientCredits,
    InvalidProviderResponse,
    ProviderError,
    ProviderRejected,
    ProviderTransportError,
    ProviderUnavailable,
    RateLimited,
)
from django_modelslab.testing import Emulator, Fault

KEY = "test-key-5e1f0c9a-never-a-real-one"
PAYLOAD = {"prompt": "a red fox", "model_id": "flux", "key": "[redacted]"}
SUCCESS = {
    "status": "success",
    "generationTime": 3.71,
    "id": 90817263,
    "output": ["https://cdn.example/generations/a-0.png"],
    "proxy_links": ["https://cdn2.example/generations/a-0.png"],
    "meta": {"prompt": "a red fox", "seed": 2817733401},
}
PROCESSING = {
    "status": "processing",
    "eta": "12.5",
    "messege": "Try to fetch request after seconds estimated",
    "fetch_result": "https://modelslab.com/api/v6/images/fetch/90817264",
    "id": "90817264",
    "output": "",
    "future_links": ["https://cdn.example/generations/0-b.jpg"],
    "proxy_links": {"1": "https://cdn2.example/b-1.png", "0": "https://cdn2.example/b-0.png"},
    "meta": {"seed": "55", "track_id": None},
}


def parse(body, status_code: int = 200, headers=None) -> ProviderResponse:
    return parse_response(body, status_code=status_code, payload=PAYLOAD, headers=headers)


# -- parsing -------------------------------------------------------------------------------


def test_parse_success() -> None:
    result = parse(SUCCESS)
    assert result.done and not result.processing
    assert result.provider_id == "90817263"
    assert result.output_urls == ("https://cdn.example/generations/a-0.png",)
    assert result.proxy_urls == ("https://cdn2.example/generations/a-0.png",)
    assert result.generation_time == 3.71
    assert result.seed == 2817733401
    assert result.eta is None and result.fetch_url is None and result.future_urls == ()
    assert result.raw == SUCCESS


def test_parse_processing_quirks() -> None:
    """String id and numbers, misspelt ``messege``, ``output: ""``, proxy_links as an object."""
    result = parse(PROCESSING)
    assert result.processing and not result.done
    assert result.provider_id == "90817264"
    assert result.eta == 12.5
    assert result.seed == 55
    assert result.output_urls == ()
    assert result.future_urls == ("https://cdn.example/generations/0-b.jpg",)
    assert result.proxy_urls == ("https://cdn2.example/b-0.png", "https://cdn2.example/b-1.png")
    assert result.fetch_url == "https://modelslab.com/api/v6/images/fetch/90817264"
    assert result.message == "Try to fetch request after seconds estimated"


def test_parse_short_fetch_processing() -> None:
    result = parse({"status": "processing", "messege": "try again later.", "output": ""})
    assert result.processing
    assert result.provider_id is None and result.output_urls == () and result.meta == {}
    assert result.message == "try again later."


def test_parse_json_text_body_and_redacts_key_fields() -> None:
    result = parse(json.dumps({**SUCCESS, "meta": {"key": "secret-ish", "seed": 1}}))
    assert result.seed == 1
    assert result.raw["meta"]["key"] == "[redacted]"


@pytest.mark.parametrize("status_code", [200, 400, 422])
def test_error_shows_provider_message(status_code: int) -> None:
    body = {"status": "error", "messege": "Model not found: nope"}
    with pytest.raises(ProviderRejected) as info:
        parse(body, status_code)
    assert type(info.value) is ProviderRejected
    assert "Model not found: nope" in str(info.value)
    assert info.value.status_code == status_code
    assert info.value.response == body
    assert info.value.payload == PAYLOAD


def test_laravel_validation_messages_are_flattened() -> None:
    body = {
        "status": "error",
        "message": {
            "prompt": ["The prompt field is required."],
            "width": ["The width must not be greater than 1024."],
        },
    }
    with pytest.raises(ProviderRejected) as info:
        parse(body, 400)
    assert str(info.value) == (
        "The prompt field is required. The width must not be greater than 1024. (HTTP 400)"
    )


@pytest.mark.parametrize(
    ("status_code", "body", "exc_type"),
    [
        (401, {"status": "error", "message": "Invalid API key"}, AuthenticationFailed),
        (200, {"status": "error", "message": "Invalid API key"}, AuthenticationFailed),
        (402, {"status": "error", "message": "Insufficient credits."}, InsufficientCredits),
        (200, {"status": "failed", "message": "NSFW", "id": 3}, GenerationFailed),
        (200, {"status": "error", "message": "Slow down", "retry_after": 4}, RateLimited),
        (503, "<html>Service Unavailable</html>", ProviderUnavailable),
        (404, "<html>Not Found</html>", InvalidProviderResponse),
        (200, "<html>oops</html>", InvalidProviderResponse),
        (200, {"status": "queued?"}, InvalidProviderResponse),
        (200, ["not", "an", "object"], InvalidProviderResponse),
    ],
)
def test_error_classes(status_code: int, body, exc_type: type[ProviderError]) -> None:
    with pytest.raises(exc_type) as info:
        parse(body, status_code)
    assert info.value.status_code == status_code


def test_rate_limit_retry_after_from_body_or_header() -> None:
    with pytest.raises(RateLimited) as info:
        parse({"status": "error", "message": "Rate limit exceeded.", "retry_after": "7"}, 429)
    assert info.value.retry_after == 7
    with pytest.raises(RateLimited) as info:
        parse({"status": "error"}, 429, headers={"retry-after": "3"})
    assert info.value.retry_after == 3


def test_non_json_text_is_kept_truncated() -> None:
    with pytest.raises(InvalidProviderResponse) as info:
        parse("x" * 10_000)
    assert info.value.response == "x" * 2048
    assert len(str(info.value)) < 400


# -- client over httpx.MockTransport -------------------------------------------------------


class Recorder:
    """A scripted server: each request gets the next answer (a Response or an exception)."""

    def __init__(self, *answers: httpx.Response | Exception | Callable) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def client(self, **kwargs) -> ModelsLabClient:
        options = {"max_retries": 3, "retry_backoff": 0.5, "retry_backoff_max": 2.0} | kwargs
        return ModelsLabClient(
            KEY,
            "https://ml.test/api/",
            transport=httpx.MockTransport(self),
            sleep=self.sleeps.append,
            **options,
        )


def ok(body=SUCCESS, status: int = 200, **kw) -> httpx.Response:
    return httpx.Response(status, json=body, **kw)


def test_request_shape() -> None:
    server = Recorder(ok())
    with server.client() as client:
        result = client.text2img({"prompt": "a red fox", "model_id": "flux", "key": "other"})
    assert result.done and result.output_urls
    (request,) = server.requests
    assert request.method == "POST"
    assert str(request.url) == "https://ml.test/api/v6/images/text2img"
    assert request.headers["user-agent"] == f"django-modelslab/{__version__}"
    assert json.loads(request.content) == {"prompt": "a red fox", "model_id": "flux", "key": KEY}
    assert KEY not in str(request.headers)


def test_fetch_path_and_id_validation() -> None:
    server = Recorder(ok())
    client = server.client()
    client.fetch(90817264)
    assert str(server.requests[0].url) == "https://ml.test/api/v6/images/fetch/90817264"
    assert json.loads(server.requests[0].content) == {"key": KEY}
    for bad in ("../text2img", "1/2", "", "1?x=2"):
        with pytest.raises(ValueError):
            client.fetch(bad)
    assert len(server.requests) == 1


def test_connect_error_on_text2img_is_retried() -> None:
    server = Recorder(httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), ok())
    assert server.client().text2img({"prompt": "p"}).done
    assert len(server.requests) == 3
    assert len(server.sleeps) == 2
    assert 0 <= server.sleeps[0] <= 0.5 and 0 <= server.sleeps[1] <= 1.0


@pytest.mark.parametrize(
    "answer",
    [
        httpx.ReadTimeout("read timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset"),
        ok({"status": "error", "message": "boom"}, 500),
        ok({"status": "error", "message": "gateway timeout"}, 504),
    ],
)
def test_lost_answer_on_text2img_is_ambiguous_and_not_retried(answer) -> None:
    server = Recorder(answer, ok())
    with pytest.raises(AmbiguousSubmission) as info:
        server.client().text2img({"prompt": "p"})
    assert info.value.may_have_been_accepted and not info.value.retriable
    assert len(server.requests) == 1 and server.sleeps == []
    assert info.value.__cause__ is not None
    assert info.value.payload == {"prompt": "p", "key": "[redacted]"}


@pytest.mark.parametrize("status", [502, 503])
def test_gateway_errors_on_text2img_are_retried(status: int) -> None:
    server = Recorder(httpx.Response(status, text="Bad gateway"), ok())
    assert server.client().text2img({"prompt": "p"}).done
    assert len(server.requests) == 2


def test_fetch_retries_everything_retriable() -> None:
    server = Recorder(
        httpx.ReadTimeout("t"),
        httpx.RemoteProtocolError("dropped"),
        ok({"status": "error"}, 500),
        ok(PROCESSING),
    )
    assert server.client().fetch("1").processing
    assert len(server.requests) == 4 and len(server.sleeps) == 3


def test_backoff_is_capped_and_jittered() -> None:
    server = Recorder(ok({"status": "error"}, 503))
    with pytest.raises(ProviderUnavailable) as info:
        server.client(max_retries=6).fetch("1")
    assert len(server.requests) == 7
    caps = [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert all(0 <= wait <= cap for wait, cap in zip(server.sleeps, caps, strict=True))
    assert info.value.status_code == 503


def test_exhausted_transport_errors_raise_chained_transport_error() -> None:
    server = Recorder(httpx.ConnectError("refused"))
    with pytest.raises(ProviderTransportError) as info:
        server.client(max_retries=2).text2img({"prompt": "p"})
    assert len(server.requests) == 3
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert "refused" in str(info.value)


def test_rate_limit_honours_retry_after_header_capped() -> None:
    limited = {"status": "error", "message": "Rate limit exceeded."}
    server = Recorder(
        ok(limited, 429, headers={"Retry-After": "1.5"}),
        ok(limited, 429, headers={"Retry-After": "120"}),
        ok(),
    )
    assert server.client().text2img({"prompt": "p"}).done
    assert server.sleeps == [1.5, 2.0]


def test_rate_limit_exhausted() -> None:
    server = Recorder(ok({"status": "error", "message": "Queue full", "retry_after": 1}, 429))
    with pytest.raises(RateLimited) as info:
        server.client(max_retries=1).text2img({"prompt": "p"})
    assert len(server.requests) == 2 and server.sleeps == [1]
    assert info.value.retry_after == 1 and "Queue full" in str(info.value)


def test_a_retry_after_longer_than_max_retry_after_raises_at_once() -> None:
    limited = {"status": "error", "message": "Rate limit exceeded."}
    server = Recorder(
        ok(limited, 429, headers={"Retry-After": "3"}),  # short enough: waited
        ok(limited, 429, headers={"Retry-After": "9999"}),  # too long: raised, not slept
        ok(),
    )
    with pytest.raises(RateLimited) as info:
        server.client(retry_backoff_max=30.0, max_retry_after=5.0).text2img({"prompt": "p"})
    assert server.sleeps == [3] and len(server.requests) == 2
    assert info.value.retry_after == 9999 and info.value.status_code == 429
    assert "Rate limit exceeded: ModelsLab asks to wait 9999 s; try again after 20" in str(
        info.value
    )


def test_no_retry_when_max_retries_is_zero() -> None:
    server = Recorder(ok({"status": "error"}, 503), ok())
    with pytest.raises(ProviderUnavailable):
        server.client(max_retries=0).fetch(5)
    assert len(server.requests) == 1


def test_key_echoed_by_provider_is_redacted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = {"status": "error", "message": f"Invalid API key {KEY}", "key": KEY}
    server = Recorder(ok(body, 401))
    client = server.client()
    with pytest.raises(AuthenticationFailed) as info:
        client.text2img({"prompt": "p"})
    exc = info.value
    for text in (str(exc), repr(exc), repr(exc.response), repr(exc.payload), repr(client)):
        assert KEY not in text
    assert exc.response == {
        "status": "error",
        "message": "Invalid API key [redacted]",
        "key": "[redacted]",
    }
    assert KEY not in caplog.text


def test_empty_key_is_sent_as_is_and_never_replaces_text() -> None:
    server = Recorder(ok())
    ModelsLabClient("", "https://ml.test/api", transport=httpx.MockTransport(server)).fetch(1)
    assert json.loads(server.requests[0].content) == {"key": ""}
    assert redact("some text", "") == "some text"


def test_redaction_covers_escaped_forms_and_field_names() -> None:
    secret = 'k"ey\\with/odd+chars é\n'  # as read from a file: a trailing newline
    text = {
        "repr": f"Illegal header value {secret.encode()!r}",
        "json": json.dumps({"key_echo": secret}),
        "url": f"https://x.test/?k={quote_plus(secret)}&p=/{quote(secret, safe='')}",
        "stripped": f"key={secret.strip()}.",
        secret.strip(): "a field named by the key",
        f"prefix-{quote(secret)}": "and by its URL form",
    }

    shown = redact(text, secret)

    assert shown == {
        "repr": "Illegal header value b'[redacted]'",
        "json": '{"key_echo": "[redacted]"}',
        "url": "https://x.test/?k=[redacted]&p=/[redacted]",
        "stripped": "key=[redacted].",
        "[redacted]": "a field named by the key",
        "prefix-[redacted]": "and by its URL form",
    }
    assert redact(["a", "b"], ["a", None, ""]) == ["[redacted]", "b"]  # several secrets


def test_a_text_answer_is_redacted_before_it_is_cut() -> None:
    head = 2048 - 18  # the cut falls 18 characters into the key
    server = Recorder(httpx.Response(502, text="x" * head + KEY + "y" * 50))
    with pytest.raises(ProviderUnavailable) as info:
        server.client(max_retries=0).fetch(1)
    assert info.value.response == "x" * head + "[redacted]" + "y" * 8
    assert KEY[:18] not in str(info.value)


# -- real HTTP against the bundled emulator ------------------------------------------------


@pytest.fixture
def make_client(
    emulator: Emulator, sleeps: list[float]
) -> Iterator[Callable[..., ModelsLabClient]]:
    """Build clients on the emulator with tiny backoffs; waits are recorded, not slept."""
    clients: list[ModelsLabClient] = []

    def make(**kwargs) -> ModelsLabClient:
        options = {
            "timeout": 2.0,
            "connect_timeout": 1.0,
            "max_retries": 2,
            "retry_backoff": 0.01,
            "retry_backoff_max": 0.5,
            "sleep": sleeps.append,
        } | kwargs
        clients.append(ModelsLabClient(KEY, emulator.base_url, **options))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., ModelsLabClient]) -> ModelsLabClient:
    return make_client()


@pytest.fixture
def impatient(make_client: Callable[..., ModelsLabClient]) -> ModelsLabClient:
    """A client whose read timeout (0.3 s) is shorter than a Fault.delay(0.6)."""
    return make_client(timeout=0.3)


PARAMS = {"prompt": "a red fox in snow", "model_id": "flux", "width": 256, "height": 256}


def test_emulator_success(emulator: Emulator, client: ModelsLabClient) -> None:
    result = client.text2img({**PARAMS, "seed": "42", "samples": 2})
    assert result.done
    assert result.provider_id is not None and result.provider_id.isdigit()
    assert len(result.output_urls) == 2 and len(result.proxy_urls) == 2
    assert all(url.startswith(emulator.origin) for url in result.output_urls)
    assert result.seed == 42
    assert result.meta["prompt"] == PARAMS["prompt"]
    assert result.raw["id"] == int(result.provider_id)
    assert emulator.calls["text2img"] == 1
    assert emulator.requests[0][1]["prompt"] == PARAMS["prompt"]


def test_emulator_processing_then_fetch(emulator: Emulator, client: ModelsLabClient) -> None:
    emulator.configure(mode="processing", eta=0, pending_fetches=1)
    queued = client.text2img(PARAMS)
    assert queued.processing and queued.output_urls == ()
    assert queued.eta == 0 and queued.future_urls and queued.provider_id
    assert queued.fetch_url == f"{emulator.base_url}/v6/images/fetch/{queued.provider_id}"
    assert queued.message == "Try to fetch request after seconds estimated"  # "messege"

    pending = client.fetch(queued.provider_id)
    assert pending.processing and pending.message == "try again later."
    done = client.fetch(int(queued.provider_id))
    assert done.done
    assert done.output_urls == queued.future_urls
    assert emulator.calls["fetch"] == 2


def test_a_client_from_a_settings_mapping(emulator: Emulator, sleeps: list[float]) -> None:
    """``from_settings`` reads a plain MODELSLAB-style dict (nothing of Django) and retries
    as it says; settings it does not use are ignored, constructor arguments pass through."""
    emulator.configure(api_keys={KEY})  # another key would be refused (401)
    emulator.add_fault("text2img", Fault.http_error(503))
    conf = {
        "API_KEY": KEY,
        "BASE_URL": emulator.base_url,
        "TIMEOUT": 2.0,
        "CONNECT_TIMEOUT": 1.0,
        "MAX_RETRIES": 1,
        "RETRY_BACKOFF": 0.01,
        "RETRY_BACKOFF_MAX": 0.5,
        "DEFAULT_MODEL": "not-a-client-setting",
    }
    with ModelsLabClient.from_settings(conf, sleep=sleeps.append) as client:
        assert client.timeout == httpx.Timeout(2.0, connect=1.0)
        assert (client.max_retries, client.retry_backoff_max) == (1, 0.5)
        assert client.text2img(PARAMS).done
    assert emulator.calls["text2img"] == 2 and len(sleeps) == 1


def test_from_settings_leaves_out_what_the_mapping_leaves_out() -> None:
    client = AsyncModelsLabClient.from_settings({"API_KEY": KEY}, max_retry_after=5.0)
    assert isinstance(client, AsyncModelsLabClient)
    assert client.base_url == DEFAULTS["BASE_URL"] + "/"  # one default, in conf
    assert (client.max_retries, client.max_retry_after) == (3, 5.0)
    with pytest.raises(TypeError, match="api_key"):
        ModelsLabClient.from_settings({"BASE_URL": "http://127.0.0.1:9/api"})


def test_emulator_unknown_fetch_id(emulator: Emulator, client: ModelsLabClient) -> None:
    with pytest.raises(ProviderRejected, match="Request not found") as info:
        client.fetch(1)
    assert info.value.status_code == 404


@pytest.mark.parametrize("errors_as_200", [False, True])
def test_emulator_validation_error(
    emulator: Emulator, client: ModelsLabClient, errors_as_200: bool
) -> None:
    emulator.configure(errors_as_200=errors_as_200)
    with pytest.raises(ProviderRejected) as info:
        client.text2img({"model_id": "flux", "width": 4096})
    assert "The prompt field is required." in str(info.value)
    assert info.value.status_code == (200 if errors_as_200 else 400)
    assert info.value.payload == {"model_id": "flux", "width": 4096, "key": "[redacted]"}
    assert emulator.calls["text2img"] == 1


def test_emulator_error_200_fault(emulator: Emulator, client: ModelsLabClient) -> None:
    emulator.add_fault("text2img", Fault.error_200("Model not found: nope"))
    with pytest.raises(ProviderRejected, match="Model not found: nope"):
        client.text2img(PARAMS)


@pytest.mark.parametrize("errors_as_200", [False, True])
def test_emulator_bad_key(emulator: Emulator, client: ModelsLabClient, errors_as_200) -> None:
    emulator.configure(api_keys={"the-only-valid-key"}, errors_as_200=errors_as_200)
    with pytest.raises(AuthenticationFailed, match="Invalid API key"):
        client.text2img(PARAMS)
    assert emulator.calls["text2img"] == 1


def test_emulator_good_key(emulator: Emulator, client: ModelsLabClient) -> None:
    emulator.configure(api_keys={KEY})
    assert client.text2img(PARAMS).done


@pytest.mark.parametrize("api_version", ["v6", "v7"])
def test_emulator_key_with_surrounding_whitespace_is_stripped(
    emulator: Emulator, api_version: str
) -> None:
    emulator.configure(api_keys={KEY})
    with ModelsLabClient(f" {KEY}\n", emulator.base_url, max_retries=0) as client:
        model = {"v6": "flux", "v7": "flux-2-pro"}[api_version]
        assert client.generate("text2img", {**PARAMS, "model_id": model}, api_version=api_version)


def test_emulator_key_with_a_newline_inside_is_never_quoted(emulator: Emulator) -> None:
    key = "first-half-of-a-key\nsecond-half-of-it"  # refused by check E011, used anyway
    client = ModelsLabClient(key, emulator.base_url, max_retries=0)
    with client, pytest.raises(ProviderTransportError) as info:  # not a legal header value
        client.generate("text2img", PARAMS, api_version="v7")
    shown = "".join(traceback.format_exception(info.value)) + repr(info.value)
    assert "Could not reach ModelsLab: LocalProtocolError" in shown
    assert "[redacted]" in shown
    assert "first-half-of-a-key" not in shown and "second-half-of-it" not in shown
    assert emulator.calls["v7_text2img"] == 0


def test_emulator_insufficient_credits(emulator: Emulator, client: ModelsLabClient) -> None:
    emulator.add_fault("text2img", Fault.insufficient_credits())
    with pytest.raises(InsufficientCredits, match="Insufficient credits"):
        client.text2img(PARAMS)


def test_emulator_failed_job(emulator: Emulator, client: ModelsLabClient) -> None:
    emulator.configure(mode="processing", eta=0)
    emulator.add_fault("text2img", Fault.failed("NSFW content detected"))
    queued = client.text2img(PARAMS)
    with pytest.raises(GenerationFailed, match="NSFW content detected"):
        client.fetch(queued.provider_id)


def test_emulator_rate_limit_then_success(
    emulator: Emulator, client: ModelsLabClient, sleeps: list[float]
) -> None:
    emulator.add_fault("text2img", Fault.rate_limit(retry_after=0.25))
    assert client.text2img(PARAMS).done
    assert sleeps == [0.25]
    assert emulator.calls["text2img"] == 2


def test_emulator_rate_limit_exhausted(
    emulator: Emulator, client: ModelsLabClient, sleeps: list[float]
) -> None:
    emulator.add_fault("text2img", Fault.rate_limit(retry_after=5), times=3)
    with pytest.raises(RateLimited, match="Rate limit exceeded") as info:
        client.text2img(PARAMS)
    assert info.value.retry_after == 5 and info.value.status_code == 429
    assert sleeps == [0.5, 0.5]  # capped at retry_backoff_max
    assert emulator.calls["text2img"] == 3


def test_emulator_server_error_on_fetch_is_retried(
    emulator: Emulator, client: ModelsLabClient, sleeps: list[float]
) -> None:
    queued = client.text2img(PARAMS)
    emulator.add_fault("fetch", Fault.http_error(500))
    emulator.add_fault("fetch", Fault.http_error(503, "Service Unavailable"))
    assert client.fetch(queued.provider_id).done
    assert emulator.calls["fetch"] == 3 and len(sleeps) == 2


def test_emulator_server_error_on_fetch_exhausted(
    emulator: Emulator, client: ModelsLabClient
) -> None:
    emulator.add_fault("fetch", Fault.http_error(503, "Service Unavailable"), times=5)
    with pytest.raises(ProviderUnavailable, match="Service Unavailable") as info:
        client.fetch(1)
    assert info.value.status_code == 503
    assert emulator.calls["fetch"] == 3


def test_emulator_500_on_text2img_is_ambiguous(
    emulator: Emulator, client: ModelsLabClient, sleeps: list[float]
) -> None:
    emulator.add_fault("text2img", Fault.http_error(500, "Internal Server Error"))
    with pytest.raises(AmbiguousSubmission) as info:
        client.text2img(PARAMS)
    assert info.value.may_have_been_accepted
    assert info.value.status_code == 500 and "Internal Server Error" in str(info.value)
    assert emulator.calls["text2img"] == 1 and sleeps == []


def test_emulator_503_on_text2img_is_retried(emulator: Emulator, client: ModelsLabClient) -> None:
    emulator.add_fault("text2img", Fault.http_error(503, "Service Unavailable"))
    assert client.text2img(PARAMS).done
    assert emulator.calls["text2img"] == 2


def test_emulator_timeout_on_fetch_is_retried(
    emulator: Emulator, impatient: ModelsLabClient, sleeps: list[float]
) -> None:
    queued = impatient.text2img(PARAMS)
    emulator.add_fault("fetch", Fault.delay(0.6))
    assert impatient.fetch(queued.provider_id).done
    assert emulator.calls["fetch"] == 2 and len(sleeps) == 1


def test_emulator_read_timeout_on_text2img_is_ambiguous(
    emulator: Emulator, impatient: ModelsLabClient, sleeps: list[float]
) -> None:
    emulator.add_fault("text2img", Fault.delay(0.6))
    with pytest.raises(AmbiguousSubmission) as info:
        impatient.text2img(PARAMS)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert emulator.calls["text2img"] == 1 and sleeps == []
    # Why it is not retried: the provider took the job after all.
    deadline = time.monotonic() + 2
    while not emulator.jobs and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(emulator.jobs) == 1


def test_emulator_dropped_connection(
    emulator: Emulator, client: ModelsLabClient, sleeps: list[float]
) -> None:
    emulator.add_fault("text2img", Fault.drop_connection())
    with pytest.raises(AmbiguousSubmission):
        client.text2img(PARAMS)
    assert emulator.calls["text2img"] == 1
    queued = client.text2img(PARAMS)
    emulator.add_fault("fetch", Fault.drop_connection())
    assert client.fetch(queued.provider_id).done
    assert emulator.calls["fetch"] == 2


def test_emulator_connection_refused_is_retried_then_raised(sleeps: list[float]) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ModelsLabClient(
        KEY, f"http://127.0.0.1:{port}/api", max_retries=2, retry_backoff=0.01, sleep=sleeps.append
    )
    with pytest.raises(ProviderTransportError) as info:
        client.text2img(PARAMS)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert not info.value.may_have_been_accepted
    assert len(sleeps) == 2


def test_key_never_leaks(
    emulator: Emulator, impatient: ModelsLabClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = impatient
    caplog.set_level(logging.DEBUG)
    emulator.configure(mode="processing", eta=0)
    errors: list[ProviderError] = []
    scenarios = [
        ("text2img", Fault.http_error(500)),
        ("text2img", Fault.delay(0.6)),
        ("text2img", Fault.drop_connection()),
        ("text2img", Fault.error_200(f"echoing {KEY}")),
        ("text2img", Fault.rate_limit(0.01)),
        ("fetch", Fault.http_error(503)),
    ]
    for route, fault in scenarios:
        emulator.add_fault(route, fault, times=3)
        with pytest.raises(ProviderError) as info:
            client.text2img(PARAMS) if route == "text2img" else client.fetch(1)
        errors.append(info.value)
        emulator.faults.clear()
    with pytest.raises(ProviderRejected) as info:
        client.text2img({"prompt": ""})
    errors.append(info.value)
    emulator.configure(api_keys={"another"})
    with pytest.raises(AuthenticationFailed) as info:
        client.text2img(PARAMS)
    errors.append(info.value)

    assert len({type(e) for e in errors}) >= 5
    for exc in errors:
        for text in (str(exc), repr(exc), repr(exc.response), repr(exc.payload), repr(exc.args)):
            assert KEY not in text
        assert exc.payload is not None and exc.payload["key"] == "[redacted]"
    assert "echoing [redacted]" in str(errors[3])
    assert KEY not in repr(client) and KEY not in str(client)
    assert "v6/images/text2img" in caplog.text  # the calls were logged...
    assert KEY not in caplog.text  # ...without the key
    deadline = time.monotonic() + 2  # let the delayed call finish before the next test
    while not emulator.jobs and time.monotonic() < deadline:
        time.sleep(0.02)
