"""AsyncModelsLabClient: real HTTP against the emulator, run with ``asyncio.run``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from django_modelslab.client import AsyncModelsLabClient, ModelsLabClient
from django_modelslab.exceptions import AmbiguousSubmission, ProviderRejected, RateLimited
from django_modelslab.testing import Emulator, Fault

KEY = "test-key-5e1f0c9a-never-a-real-one"
PARAMS = {"prompt": "a red fox in snow", "model_id": "flux", "width": 256, "height": 256}

Scenario = Callable[[AsyncModelsLabClient], Awaitable[Any]]


@pytest.fixture
def run_async(emulator: Emulator, sleeps: list[float]) -> Callable[..., Any]:
    """Run ``scenario(client)`` with ``asyncio.run``; waits are recorded, not slept."""

    async def record(seconds: float) -> None:
        sleeps.append(seconds)

    def run(scenario: Scenario, **kwargs: Any) -> Any:
        async def main() -> Any:
            options: dict[str, Any] = {
                "timeout": 2.0,
                "connect_timeout": 1.0,
                "max_retries": 2,
                "retry_backoff": 0.01,
                "retry_backoff_max": 0.5,
                "sleep": record,
            } | kwargs
            async with AsyncModelsLabClient(KEY, emulator.base_url, **options) as client:
                return await scenario(client)

        # A thread of its own: a session fixture (Playwright's sync API) may keep an event
        # loop running in this one, where asyncio.run() refuses to start.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, main()).result()

    return run


def test_success(emulator: Emulator, run_async) -> None:
    emulator.configure(api_keys={KEY})  # any other key would be refused
    result = run_async(lambda client: client.text2img({**PARAMS, "seed": 42, "samples": 2}))

    assert result.done
    assert len(result.output_urls) == 2
    assert all(url.startswith(emulator.origin) for url in result.output_urls)
    assert result.seed == 42
    assert emulator.calls["text2img"] == 1
    assert emulator.requests[0][1]["prompt"] == PARAMS["prompt"]


def test_processing_then_fetch(emulator: Emulator, run_async) -> None:
    emulator.configure(mode="processing", eta=0, pending_fetches=1)

    async def scenario(client: AsyncModelsLabClient):
        queued = await client.text2img(PARAMS)
        pending = await client.fetch(queued.provider_id)
        done = await client.fetch(int(queued.provider_id))
        return queued, pending, done

    queued, pending, done = run_async(scenario)

    assert queued.processing and queued.output_urls == () and queued.provider_id
    assert pending.processing
    assert done.done and done.output_urls == queued.future_urls
    assert emulator.calls["fetch"] == 2


def test_same_answers_as_the_sync_client(emulator: Emulator, run_async) -> None:
    """One parser: both clients turn the same job into equal ProviderResponses."""
    result = run_async(lambda client: client.text2img({**PARAMS, "seed": 7}))
    with ModelsLabClient(KEY, emulator.base_url, timeout=2.0) as client:
        again = client.fetch(result.provider_id)
    via_async = run_async(lambda client: client.fetch(result.provider_id))

    assert via_async == again


def test_rate_limit_then_success_honours_retry_after(
    emulator: Emulator, run_async, sleeps: list[float]
) -> None:
    emulator.add_fault("text2img", Fault.rate_limit(retry_after=0.25))

    assert run_async(lambda client: client.text2img(PARAMS)).done
    assert sleeps == [0.25]
    assert emulator.calls["text2img"] == 2


def test_rate_limit_exhausted(emulator: Emulator, run_async, sleeps: list[float]) -> None:
    emulator.add_fault("text2img", Fault.rate_limit(retry_after=5), times=3)

    with pytest.raises(RateLimited, match="Rate limit exceeded") as info:
        run_async(lambda client: client.text2img(PARAMS))
    assert info.value.retry_after == 5
    assert sleeps == [0.5, 0.5]  # capped at retry_backoff_max
    assert emulator.calls["text2img"] == 3


def test_500_on_text2img_is_ambiguous_and_not_retried(
    emulator: Emulator, run_async, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="django_modelslab")
    emulator.add_fault("text2img", Fault.http_error(500, "Internal Server Error"))

    with pytest.raises(AmbiguousSubmission) as info:
        run_async(lambda client: client.text2img(PARAMS))

    exc = info.value
    assert exc.may_have_been_accepted and exc.status_code == 500
    assert "Internal Server Error" in str(exc)
    assert emulator.calls["text2img"] == 1 and sleeps == []
    assert exc.payload["key"] == "[redacted]"
    for text in (str(exc), repr(exc), repr(exc.response), repr(exc.payload), repr(exc.args)):
        assert KEY not in text
    assert KEY not in caplog.text


def test_rejection_and_repr_never_show_the_key(emulator: Emulator, run_async) -> None:
    with pytest.raises(ProviderRejected, match="Request not found") as info:
        run_async(lambda client: client.fetch(1))
    assert KEY not in str(info.value) and KEY not in repr(info.value.payload)

    shown = run_async(lambda client: asyncio.sleep(0, result=repr(client)))
    assert KEY not in shown and emulator.base_url in shown


def test_fetch_refuses_a_bad_id_before_sending(emulator: Emulator, run_async) -> None:
    with pytest.raises(ValueError, match="Not a ModelsLab request id"):
        run_async(lambda client: client.fetch("../../etc"))
    assert emulator.calls["fetch"] == 0
