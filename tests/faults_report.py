"""Run the fault matrix (tests/test_faults.py) and the bad-input run (BAD_INPUT), and write
docs/reliability.md from their figures.

``python -m tests.faults_report [--output docs/reliability.md]`` (``make faults``). Exits
non-zero when a scenario fails; the report is written either way, failures marked.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MATRIX = "tests/test_faults.py"
#: Generated and hostile requests to every API endpoint and the webhook ("bad input").
BAD_INPUT = "tests/test_api_schema.py::test_generated_and_hostile_inputs_get_no_server_error"
FIGURES = ("images_lost", "double_submissions", "orphan_jobs", "app_5xx")

#: Properties proved by other tests, cited in the report (they run in ``make test``).
ELSEWHERE = [
    (
        "Bad input: deeply nested JSON, huge ids, bodies over the limit, NaN, lone surrogates",
        "tests/test_api_schema.py::test_generated_and_hostile_inputs_get_no_server_error",
        "A 4xx in the endpoint's own shape (400, 404, 413), never a 5xx; the figures above.",
    ),
    (
        "Duplicate webhook deliveries (2 extra copies)",
        "tests/test_webhooks.py::test_duplicate_deliveries_change_nothing",
        "One accepted, the copies recorded as duplicates; one set of images.",
    ),
    (
        "Forged webhook (wrong secret)",
        "tests/test_webhooks.py::test_bad_secret_is_refused_and_recorded, "
        "tests/test_security.py::test_webhook_without_the_secret_is_refused",
        "HTTP 400, delivery recorded as rejected, request untouched; no secret: all refused.",
    ),
    (
        "Forged webhook (right URL, invented outputs)",
        "tests/test_webhooks.py::test_forged_success_is_not_trusted",
        "Confirmed through fetch first: nothing downloaded or stored.",
    ),
    (
        "Webhook for an earlier attempt",
        "tests/test_webhooks.py::test_delivery_for_an_earlier_attempt_is_ignored",
        "Ignored as a duplicate; current images unchanged.",
    ),
    (
        "Generate answer lost, webhooks on",
        "tests/test_webhooks.py::test_webhook_recovers_a_lost_generate_answer",
        "Never resubmitted; the callback names the job and its images are stored (1 job).",
    ),
    (
        "Generate answer lost; a delivery with the secret names another request's job",
        "tests/test_webhooks.py::test_a_delivery_cannot_give_a_lost_answer_request_another_"
        "requests_job",
        "The named job is fetched first; it echoes another track id (or prompt), so it is not "
        "adopted: nothing stored, a warning, the delivery marked unknown with the reason.",
    ),
    (
        "1,000 webhook POSTs with wrong secrets",
        "tests/test_webhooks.py::test_deliveries_with_an_unknown_secret_are_counted_not_stored_"
        "one_by_one",
        "HTTP 400 each; counted on one row a minute (`count`), no body stored.",
    ),
    (
        'Figures no column holds (cost 5000000 or "1e30", seed 1e30, eta Infinity, NaN, '
        "a 100-digit job id)",
        "tests/test_pipeline.py::test_a_figure_no_column_holds_is_unknown_and_the_paid_job_"
        "is_stored",
        "The paid job's images are stored; the figure is unknown (null) with a warning, the raw "
        "answer keeps it; REST list and detail, admin changelist and change page answer 200.",
    ),
    (
        "S3 errors on put (wrong credentials, missing bucket)",
        "tests/test_s3_storage.py::test_wrong_credentials_fail_the_request_and_a_retry_"
        "copies_the_same_urls, ::test_missing_bucket_fails_the_request_with_the_reason",
        "Failed with S3's reason; URLs kept; the retry copies them without a new job.",
    ),
    (
        "Two runs racing for one request",
        "tests/test_workers.py::test_two_runs_racing_for_one_request_submit_one_job",
        "Compare-and-set claim: one provider job, one set of images (SQLite and PostgreSQL).",
    ),
    (
        "One task delivered twice, to two worker processes at once",
        "tests/test_workers.py::test_two_worker_processes_on_one_request_submit_one_job",
        "Two db_worker processes on PostgreSQL: one claims, the other finds it taken: "
        "1 job, 1 image (`make test-pg`).",
    ),
    (
        "`regenerate_images` interrupted with Ctrl-C, then `--resume`",
        "tests/test_workers.py::test_regenerate_images_interrupted_then_resumed_submits_each_"
        "job_once",
        "Exit 130 with the batch id; the resumed run finishes the rest: each job submitted "
        "exactly once (`make test-pg`).",
    ),
    (
        "Worker killed with SIGKILL mid-poll, then restarted",
        "tests/test_workers.py::test_worker_killed_mid_poll_is_picked_up_without_a_second_job",
        "The sweep re-queues it; the new worker polls the same job: 1 job, images stored "
        "(PostgreSQL pass, `make test-pg`).",
    ),
]


def run_matrix(junit: Path) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    return int(
        pytest.main(
            [
                "-q",
                "-p",
                "no:cacheprovider",
                "-o",
                "junit_family=xunit1",
                f"--junitxml={junit}",
                MATRIX,
                BAD_INPUT,
            ]
        )
    )


def read_results(junit: Path) -> list[dict[str, str]]:
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        row = {"name": case.get("name", ""), "time": case.get("time", "0")}
        for prop in case.iter("property"):
            row[prop.get("name", "")] = prop.get("value", "")
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        row["passed"] = "no" if failure is not None else "yes"
        if failure is not None:
            row["failure"] = (failure.get("message") or "").splitlines()[0][:200]
        rows.append(row)
    return rows


def describe(name: str) -> str:
    """The test's docstring (the fault, in a few words)."""
    import importlib

    module = importlib.import_module("tests.test_faults")
    test = getattr(module, name.split("[", 1)[0], None)
    doc = (test.__doc__ or "").strip() if test is not None else ""
    return doc or name


#: Run-specific details (ports, ids, paths, hashes) that would make the report churn.
_VOLATILE = [
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<uuid>"),
    (re.compile(r"[0-9a-f]{64}"), "<sha256>"),
    (re.compile(r"modelslab/[0-9a-f]{2}/"), "modelslab/<xx>/"),
    (re.compile(r"/tmp/\S+ "), "<tmp path> "),
    (re.compile(r"job \d{5,}"), "job <id>"),
]


def cell(text: str) -> str:
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    return text.replace("|", "\\|").replace("\n", " ")


def bad_input_line(rows: list[dict[str, str]]) -> str:
    """The "bad input" figure, from the schemathesis test's properties."""
    name = BAD_INPUT.rpartition("::")[2]
    row = next((row for row in rows if row["name"] == name), None)
    if row is None:
        return "- Bad input: **not run**"
    line = (
        f"- Bad input (generated and hostile requests to every API endpoint and the webhook): "
        f"{row.get('bad_inputs_tried', '?')} tried, **{row.get('bad_inputs_5xx', '?')}** "
        f"answered with a 5xx (target 0)"
    )
    if row["passed"] != "yes":
        line += f"; **failed**: {cell(row.get('failure', ''))}"
    return line


def render(rows: list[dict[str, str]]) -> str:
    bad_input = bad_input_line(rows)
    rows = [row for row in rows if row["name"] != BAD_INPUT.rpartition("::")[2]]
    totals = {key: sum(int(row.get(key, 0) or 0) for row in rows) for key in FIGURES}
    jobs = sum(int(row.get("provider_jobs", 0) or 0) for row in rows)
    longest = max((float(row.get("longest_run_s", 0) or 0) for row in rows), default=0.0)
    failed = [row for row in rows if row["passed"] != "yes"]
    lines = [
        "# Reliability: the fault matrix",
        "",
        "Generated by `make faults` (`python -m tests.faults_report`) from",
        "`tests/test_faults.py`: every fault below is injected with the bundled emulator and",
        "goes through the real pipeline (HTTP on 127.0.0.1, files on disk, SQLite). Each",
        "scenario asserts four properties: **no image lost** (every output ModelsLab reported",
        "is stored, or its request is left failed with the reason and the source URLs and a",
        "rerun stores it), **no double charge** (the emulator made exactly the provider jobs the",
        "scenario needs), **a readable reason and the raw provider response** for every",
        "failure, and **bounded** time (every run is asserted under a limit).",
        "",
        "## Figures",
        "",
        f"- Scenarios: {len(rows)}, passed: {len(rows) - len(failed)}",
        f"- Images lost: **{totals['images_lost']}**",
        f"- Double submissions (provider jobs beyond those needed): "
        f"**{totals['double_submissions']}** (of {jobs} provider jobs)",
        f"- Server errors (5xx) answered by the app to webhook deliveries: **{totals['app_5xx']}**",
        bad_input,
        f"- Orphan jobs (ModelsLab finished them but the answer to the generate call was lost; "
        f"never resubmitted automatically): **{totals['orphan_jobs']}**, all expected",
        f"- Longest single run: {longest:.1f} s (every run asserted under its bound)",
        "",
        "## Faults tried",
        "",
        "| Fault | What happened | Jobs | Lost | Double | Passed |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        happened = row.get("what_happened") or row.get("failure", "")
        lines.append(
            f"| {cell(describe(row['name']))} | {cell(happened)} | {row.get('provider_jobs', '')} "
            f"| {row.get('images_lost', '')} | {row.get('double_submissions', '')} "
            f"| {row['passed']} |"
        )
    lines += [
        "",
        "Steps: `run` is the worker's first attempt, `submit` a retry (the admin's or API's",
        "generate, or the stale sweep), `regenerate` a person's explicit choice of a new job.",
        "",
        "## Proved by other tests",
        "",
        "| Fault | Test | What happens |",
        "|---|---|---|",
    ]
    lines += [f"| {cell(a)} | `{cell(b)}` | {cell(c)} |" for a, b, c in ELSEWHERE]
    lines += [
        "",
        "## Known limits",
        "",
        "- A generate call whose answer is lost (read timeout, dropped connection, HTTP 500",
        "  or 504) is never sent again: ModelsLab documents no idempotency key, so a second",
        "  call could start and bill a second job. With webhooks on, the callback recovers the",
        "  job when fetching it shows it is the request's (it echoes the track id, or the",
        "  prompt); without them, or when it echoes neither, the request fails with the reason",
        "  and a person regenerates it.",
        "- Outputs ModelsLab deletes before the first copy succeeds (its URLs live 24 hours)",
        "  cannot be recovered; the request keeps the reason and the URLs, and only an explicit",
        "  regenerate pays for a new job.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default=str(ROOT / "docs" / "reliability.md"))
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        junit = Path(tmp) / "faults.xml"
        status = run_matrix(junit)
        rows = read_results(junit) if junit.exists() else []
    if not rows:
        print("The fault matrix did not run", file=sys.stderr)
        return status or 1
    Path(args.output).write_text(render(rows), encoding="utf-8")
    print(f"Wrote {args.output}: {len(rows)} tests")
    return status


if __name__ == "__main__":
    sys.exit(main())
