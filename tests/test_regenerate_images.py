"""``manage.py regenerate_images`` against the emulator: selection, dry runs, concurrency,
summaries, exit codes, and resuming after an interruption without a second provider job."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from django_modelslab import pipeline
from django_modelslab.models import GenerationRequest
from django_modelslab.testing import Fault

from .helpers import configure, new_request, process_env, run_new

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
Status = GenerationRequest.Status


def make(n: int = 1, prompt: str = "a lighthouse", **fields) -> list[GenerationRequest]:
    """``n`` requests run one after the other, seeds 0 to n - 1."""
    return [run_new(prompt, seed=index, **fields) for index in range(n)]


def regenerate_images(*args: str) -> str:
    out = io.StringIO()
    call_command("regenerate_images", *args, stdout=out, stderr=out)
    return out.getvalue()


def manage_py(emulator, settings, *args: str, terminal: bool) -> tuple[int, str]:
    """``manage.py regenerate_images`` in its own process on this test's database, emulator
    and media; its output on a pseudo-terminal (``terminal``) or a pipe."""
    command = [sys.executable, "-m", "django", "regenerate_images", *args]
    env = process_env(emulator, settings)
    if not terminal:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, timeout=120)
        return done.returncode, (done.stdout + done.stderr).decode()
    controller, terminal_end = os.openpty()
    try:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=terminal_end,
            stderr=terminal_end,
        )
        os.close(terminal_end)
        output = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the process has closed the terminal
                break
            if not chunk:
                break
            output += chunk
        return process.wait(timeout=120), output.decode()
    finally:
        os.close(controller)


def test_progress_redraws_in_place_on_a_terminal_and_prints_lines_in_a_pipe(emulator, settings):
    make(2)

    code, shown = manage_py(emulator, settings, "--concurrency", "1", terminal=True)

    assert code == 0, shown
    bar = shown[shown.index("\r[") : shown.index("Done:")]
    assert bar.count("\r[") == 2  # each step redraws the one line: no newline between them
    assert "\n" not in bar.rstrip("\r\n")
    assert "] 1/2 1 succeeded\r[" in bar and "] 2/2 2 succeeded" in bar
    assert bar.endswith("\n")  # the summary starts on a line of its own

    code, piped = manage_py(emulator, settings, "--concurrency", "1", terminal=False)

    assert code == 0, piped
    assert "\r" not in piped
    lines = piped.splitlines()
    assert [line.split(" #")[0] for line in lines if line.startswith("[")] == ["[1/2]", "[2/2]"]


def test_regenerates_selected_requests_and_keeps_history(emulator):
    first, second, other = make(2) + make(1, model_id="sdxl")
    before = emulator.calls["text2img"]

    out = regenerate_images("--model", "flux", "--concurrency", "2")

    assert emulator.calls["text2img"] == before + 2
    for request in (first, second):
        request.refresh_from_db()
        assert request.status == Status.SUCCEEDED
        assert request.images.filter(superseded=True).count() == 1
        assert request.images.filter(superseded=False).count() == 1
    other.refresh_from_db()
    assert other.attempts == 1
    assert "Done: 2 succeeded." in out
    assert "Images stored: 2 (" in out
    assert "[2/2]" in out  # plain progress lines when not on a terminal


def test_concurrency_bounds_jobs_at_modelslab_and_copies_overlap_the_next_job(emulator):
    make(2)
    emulator.latency = 0.5  # every generate call
    emulator.add_fault("download", Fault.delay(1.5), times=2)  # every copy
    started = time.perf_counter()

    regenerate_images("--concurrency", "1")

    elapsed = time.perf_counter() - started
    # One job at ModelsLab at a time: 0.5 s + 0.5 s, then the second copy (1.5 s), which
    # began when the second job did. Holding the slot through each copy would take 4 s;
    # two jobs at once, 2 s.
    assert 2.5 <= elapsed < 3.5
    assert GenerationRequest.objects.filter(status=Status.SUCCEEDED).count() == 2


def test_dry_run_lists_and_calls_nothing(emulator):
    make(2)
    before = dict(emulator.calls)

    out = regenerate_images("--dry-run")

    assert "Dry run: 2 request(s) would run" in out
    assert out.count("regenerate") == 2
    assert dict(emulator.calls) == before
    assert not GenerationRequest.objects.filter(attempts__gt=1).exists()


def test_dry_run_cuts_long_prompts_with_an_ellipsis(emulator):
    prompt = "a lighthouse at dusk " * 5
    make(1, prompt=prompt)

    assert f" {prompt[:49]}…\n" in regenerate_images("--dry-run")


def test_limit_takes_the_oldest_by_date_and_the_stale_check_reads_only_the_selection(
    emulator, settings
):
    first, second = make(2)
    # Ids and dates disagree (an import, a restored backup): the date decides.
    GenerationRequest.objects.filter(pk=second.pk).update(
        created_at=timezone.now() - timedelta(days=3)
    )
    stuck = make(1)[0]
    GenerationRequest.objects.filter(pk=stuck.pk).update(
        status=GenerationRequest.Status.QUEUED, updated_at=timezone.now() - timedelta(days=1)
    )

    with CaptureQueriesContext(connection) as queries:
        out = regenerate_images("--dry-run", "--limit", "1")

    assert f"#{second.pk} " in out and f"#{first.pk} " not in out
    stale_checks = [q["sql"] for q in queries.captured_queries if "'queued'" in q["sql"]]
    # The stale check asks about the selected request only, not the site's stuck one.
    assert stale_checks and all(f'"id" IN ({second.pk})' in sql for sql in stale_checks)


def test_filters(emulator):
    old, new = make(2)
    GenerationRequest.objects.filter(pk=old.pk).update(
        created_at=timezone.now() - timedelta(days=3), prompt="an old fox"
    )
    yesterday = (timezone.now() - timedelta(days=1)).date().isoformat()

    assert f"#{old.pk} " in regenerate_images("--dry-run", "--created-before", yesterday)
    assert f"#{old.pk} " not in regenerate_images("--dry-run", "--created-after", yesterday)
    assert f"#{new.pk} " not in regenerate_images("--dry-run", "--prompt-contains", "FOX")
    assert f"#{new.pk} " in regenerate_images("--dry-run", "--id", str(new.pk))
    assert "1 request(s)" in regenerate_images("--dry-run", "--limit", "1")
    assert "No generation request matches." in regenerate_images("--status", "failed")


def test_failures_are_summarised_with_reasons_and_exit_non_zero(emulator):
    (request,) = make(1)
    emulator.add_fault("text2img", Fault.error_200("Insufficient credits."))

    with pytest.raises(CommandError, match="1 request"):
        regenerate_images("--id", str(request.pk))

    request.refresh_from_db()
    assert request.status == Status.FAILED
    assert "Insufficient credits." in request.error


def test_a_request_outside_modelslabs_limits_is_reported_and_not_sent(emulator):
    bad, good = make(2)
    GenerationRequest.objects.filter(pk=bad.pk).update(guidance=50)

    with pytest.raises(CommandError, match="1 request"):
        out = io.StringIO()
        try:
            call_command("regenerate_images", "--yes", stdout=out, stderr=out)
        finally:
            output = out.getvalue()

    assert (
        f"Failed (1): Request #{bad.pk}: guidance: Ensure this value is less than or equal to "
        f"20.0. Use a guidance of 1.0 to 20.0 (got 50.0). [#{bad.pk}]"
    ) in output
    assert emulator.calls["text2img"] == 3  # the two made, and good's regeneration
    assert bad.images.filter(superseded=True).count() == 0
    assert good.images.filter(superseded=True).count() == 1


def test_missing_files_selects_requests_whose_file_is_gone(emulator, settings):
    kept, lost = make(2)
    lost_image = lost.images.get()
    (settings.MEDIA_ROOT / lost_image.image.name).unlink()

    out = regenerate_images("--missing-files", "--dry-run")

    assert f"#{lost.pk} " in out
    assert f"#{kept.pk} " not in out


def test_confirmation_is_required_above_the_threshold_without_a_terminal(emulator):
    for _ in range(11):
        new_request("x")

    with pytest.raises(CommandError, match="--yes"):
        regenerate_images()
    assert emulator.calls["text2img"] == 0


def test_resume_continues_an_interrupted_run_without_a_second_job(emulator):
    """A run killed after submitting: its request is left processing with a job id."""
    emulator.mode = "processing"
    (request,) = make(1)
    pipeline.regenerate(request, batch="b1", enqueue=False)
    # Simulate the worker dying mid-poll: the job was submitted, then the process was killed.
    pipeline.run(request.pk)  # completes normally here; now rewind to "killed mid-poll"
    request.refresh_from_db()
    jobs_before = emulator.calls["text2img"]
    GenerationRequest.objects.filter(pk=request.pk).update(status=Status.PROCESSING)
    request.images.filter(attempt=request.attempts).delete()

    out = regenerate_images("--resume", "b1")

    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED
    assert emulator.calls["text2img"] == jobs_before  # polled/copied, never resubmitted
    assert "Batch b1" in out


def test_resume_with_an_unknown_batch_is_an_error_naming_it(emulator, settings):
    make(1)

    with pytest.raises(CommandError, match="nonexistent") as caught:
        regenerate_images("--resume", "nonexistent")
    assert caught.value.returncode == 2

    code, out = manage_py(emulator, settings, "--resume", "nonexistent", terminal=False)
    assert code == 2
    assert "batch 'nonexistent'" in out and "No generation request matches" not in out
    assert emulator.calls["text2img"] == 1  # only make()'s


def test_stale_requests_are_continued(emulator, settings):
    configure(settings, STALE_AFTER=60)
    emulator.mode = "processing"
    emulator.add_fault("text2img", Fault.never_finish())
    (stuck,) = [new_request("x", seed=1)]
    configure(settings, MAX_WAIT=0.3)
    pipeline.run(stuck.pk)  # times out: failed, job id kept
    GenerationRequest.objects.filter(pk=stuck.pk).update(
        status=Status.PROCESSING, updated_at=timezone.now() - timedelta(minutes=5)
    )

    out = regenerate_images("--stale", "--dry-run")
    assert f"#{stuck.pk} " in out and "continue" in out

    emulator.jobs[next(iter(emulator.jobs))].never_finish = False
    regenerate_images("--stale")

    stuck.refresh_from_db()
    assert stuck.status == Status.SUCCEEDED, stuck.error
    assert emulator.calls["text2img"] == 1


def test_bad_options_are_refused():
    with pytest.raises(CommandError):
        call_command("regenerate_images", "--created-before", "yesterday-ish")
    with pytest.raises(CommandError):
        call_command("regenerate_images", "--concurrency", "0")
    with pytest.raises(CommandError):
        call_command("regenerate_images", "--enqueue", "--concurrency", "2")


def test_requests_in_flight_with_a_live_worker_are_skipped(emulator):
    (request,) = make(1)
    GenerationRequest.objects.filter(pk=request.pk).update(status=Status.PROCESSING)
    before = dict(emulator.calls)

    assert "skip" in regenerate_images("--dry-run", "--id", str(request.pk))
    out = regenerate_images("--id", str(request.pk))

    assert "1 skipped" in out
    assert dict(emulator.calls) == before
    request.refresh_from_db()
    assert request.status == Status.PROCESSING


def test_stale_requests_fail_after_max_attempts(emulator, settings):
    configure(settings, MAX_ATTEMPTS=2)
    (request,) = make(1)
    GenerationRequest.objects.filter(pk=request.pk).update(
        status=Status.PROCESSING, attempts=2, updated_at=timezone.now() - timedelta(hours=1)
    )

    regenerate_images("--stale")

    request.refresh_from_db()
    assert request.status == Status.FAILED
    assert "MAX_ATTEMPTS" in request.error


def test_progress_is_a_bar_redrawn_in_place_on_a_terminal():
    from django_modelslab.management.commands.regenerate_images import Progress, Summary

    written: list[str] = []
    progress = Progress(2, written.append, tty=True)
    summary = Summary()
    for pk, status in ((1, Status.SUCCEEDED), (2, Status.FAILED)):
        request = GenerationRequest(pk=pk, status=status, error="nope")
        summary.outcomes[status] += 1
        progress.step(request, summary)

    assert written[0].startswith("\r[" + "#" * 15 + "." * 15 + "] 1/2")
    assert written[1] == "\r[" + "#" * 30 + "] 2/2 1 failed, 1 succeeded"
    assert written[2] == "\n"
    assert len(written) == 3
    progress.finish()  # the line is already ended
    assert len(written) == 3


def test_regenerating_draws_new_seeds_unless_keep_seed(emulator):
    first, second = make(2)  # seeds 0 and 1

    regenerate_images("--keep-seed")
    kept = {request.pk: request.seed for request in GenerationRequest.objects.all()}
    regenerate_images()

    sent = [body["seed"] for route, body in emulator.requests if route == "text2img"]
    assert kept == {first.pk: 0, second.pk: 1}
    assert sorted(sent[2:4]) == [0, 1]  # the same jobs again, paid again
    for request in (first, second):
        request.refresh_from_db()
        assert request.seed not in (0, 1)
        assert request.images.get(attempt=3).seed == request.seed
        assert request.images.get(attempt=2).seed == kept[request.pk]
    assert sorted(sent[4:]) == sorted([first.seed, second.seed])


def test_a_cost_nobody_knows_is_unknown_not_zero(emulator, settings):
    flux = make(1)
    out = regenerate_images("--dry-run") + regenerate_images()

    assert "Estimated cost (PRICES): unknown (1 request(s) of a model with no price: flux)." in out
    assert "Cost: unknown (1 job(s) with no cost reported and no price in PRICES)." in out
    assert "0.00" not in out

    configure(settings, PRICES={"sdxl": "0.5"})
    make(1, model_id="sdxl")
    out = regenerate_images("--dry-run") + regenerate_images()

    assert (
        "Estimated cost (PRICES): at least 0.50 credits "
        "(1 request(s) of a model with no price: flux)." in out
    )
    assert (
        "Cost: at least 0.50 credits (1 job(s) with no cost reported and no price in PRICES)."
        in out
    )

    configure(settings, PRICES={"*": "0.5"})
    out = regenerate_images("--dry-run", "--id", str(flux[0].pk))
    out += regenerate_images("--id", str(flux[0].pk))

    assert "Estimated cost (PRICES): 0.50 credits." in out
    assert "Cost: 0.50 credits." in out
