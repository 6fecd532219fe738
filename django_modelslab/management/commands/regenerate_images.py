"""``manage.py regenerate_images``: re-run generation requests in bulk.

Selected requests that have finished are regenerated (a new provider job; earlier images
stay, marked superseded). Requests still queued or processing are continued instead: their
job is polled or their outputs copied, never submitted a second time. Every run is a batch
with an id printed first; ``--resume BATCH`` continues an interrupted run without starting
a second provider job for anything the first run already sent.
"""

from __future__ import annotations

import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, time
from decimal import Decimal
from queue import SimpleQueue
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from django_modelslab import costs, pipeline
from django_modelslab.amounts import format_amount
from django_modelslab.conf import get_setting
from django_modelslab.exceptions import BudgetExceeded, GenerationInProgress, InvalidParameters
from django_modelslab.fallbacks import clean_model_ids
from django_modelslab.integrity import requests_with_missing_files
from django_modelslab.models import Charge, GeneratedImage, GenerationRequest

Status = GenerationRequest.Status
#: The selecting options that are plain lookups: option -> lookup.
SELECT_LOOKUPS = {
    "ids": "pk__in",
    "statuses": "status__in",
    "model": "model_id",
    "kinds": "kind__in",
    "created_before": "created_at__lt",
    "created_after": "created_at__gte",
    "prompt_contains": "prompt__icontains",
}
#: Above this many requests the command asks before spending money (``--yes`` skips it).
CONFIRM_ABOVE = 10
#: Up to this many selected requests, the stale check reads only theirs (else the table's).
STALE_CHECK_IDS = 10_000


def date_or_datetime(value: str) -> datetime:
    """An ISO date (midnight, current time zone) or datetime, for --created-before/--after."""
    parsed = parse_datetime(value)
    if parsed is None:
        day = parse_date(value)
        if day is None:
            raise ValueError(value)
        parsed = datetime.combine(day, time.min)
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed)
    return parsed


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


@dataclass
class Summary:
    """What the run did, for the closing report and the exit code."""

    outcomes: Counter[str] = field(default_factory=Counter)
    failures: dict[int, str] = field(default_factory=dict)
    refusals: dict[int, str] = field(default_factory=dict)  # ended refused (safety, moderation)
    over_budget: dict[int, str] = field(default_factory=dict)  # not started: a daily budget
    produced_by: Counter[str] = field(default_factory=Counter)
    succeeded: dict[int, int] = field(default_factory=dict)  # request id -> its attempt
    new_jobs: dict[int, str] = field(default_factory=dict)  # succeeded by a paid job: its model
    cost: Decimal = Decimal(0)
    ran: bool = False  # something ran in this process (its cost is known)

    def add(self, generation: GenerationRequest, *, cost_before: Decimal | None = None) -> None:
        """Count a finished request (no database: the images are counted by :meth:`stored`)."""
        self.ran = True
        self.cost += (generation.cost or 0) - (cost_before or 0)
        self.outcomes[generation.status] += 1
        if generation.status == Status.FAILED:
            self.failures[generation.pk] = generation.error
        if generation.status == Status.REFUSED:
            self.refusals[generation.pk] = generation.error
        if generation.status == Status.SUCCEEDED:
            self.produced_by[generation.produced_by or generation.model_id] += 1
            self.succeeded[generation.pk] = generation.attempts
            if generation.cached_from_id is None:
                self.new_jobs[generation.pk] = generation.produced_by or generation.model_id

    def stored(self) -> tuple[int, int]:
        """Images the succeeded attempts stored, and their bytes (counted once, at the end)."""
        ids = list(self.succeeded)
        count = size = 0
        for start in range(0, len(ids), 500):  # under every database's parameter limit
            rows = GeneratedImage.objects.filter(request_id__in=ids[start : start + 500])
            for request_id, attempt, size_ in rows.values_list("request", "attempt", "bytes"):
                if self.succeeded[request_id] == attempt:
                    count, size = count + 1, size + size_
        return count, size

    def unknown_costs(self) -> int:
        """Jobs that stored images with no charge: no cost reported, no price in PRICES."""
        ids = list(self.new_jobs)
        charged: set[int] = set()
        for start in range(0, len(ids), 500):
            rows = Charge.objects.filter(request_id__in=ids[start : start + 500])
            for request_id, attempt, model_id in rows.values_list("request", "attempt", "model_id"):
                if self.succeeded[request_id] == attempt and self.new_jobs[request_id] == model_id:
                    charged.add(request_id)
        return len(ids) - len(charged)


def cost_text(amount: Decimal, unknown: int, what: str) -> str:
    """``amount`` in COST_UNIT, said as unknown, or as a lower bound, when ``unknown`` > 0."""
    unit = get_setting("COST_UNIT")
    if not unknown:
        return f"{format_amount(amount)} {unit}"
    if not amount:
        return f"unknown ({unknown} {what})"
    return f"at least {format_amount(amount)} {unit} ({unknown} {what})"


class Progress:
    """A bar redrawn in place on a terminal; one plain line per request otherwise.

    ``write`` takes text as is (no newline added) and shows it at once.
    """

    def __init__(self, total: int, write: Callable[[str], Any], tty: bool) -> None:
        self.total, self.done, self.write, self.tty = total, 0, write, tty
        self.open = False  # a bar is drawn and its line not ended yet

    def step(self, generation: GenerationRequest, summary: Summary) -> None:
        self.done += 1
        if not self.tty:
            failed = generation.status in (Status.FAILED, Status.REFUSED)
            detail = f": {generation.error}" if failed else ""
            self.write(f"[{self.done}/{self.total}] #{generation.pk} {generation.status}{detail}\n")
            return
        width = 30
        filled = width * self.done // max(self.total, 1)
        counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.outcomes.items()))
        bar = "#" * filled + "." * (width - filled)
        self.write(f"\r[{bar}] {self.done}/{self.total} {counts}")
        self.open = True
        if self.done >= self.total:
            self.finish()

    def finish(self) -> None:
        """End the bar's line, if one is open (the summary starts on a line of its own)."""
        if self.open:
            self.write("\n")
            self.open = False


class Command(BaseCommand):
    keep_seed = False  # --keep-seed
    help = (
        "Regenerate generation requests in bulk (earlier images are kept). Requests still "
        "queued or processing are continued, never submitted twice."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        select = parser.add_argument_group("which requests")
        select.add_argument(
            "--id",
            dest="ids",
            type=int,
            action="append",
            metavar="ID",
            help="This request (repeatable).",
        )
        select.add_argument(
            "--status",
            dest="statuses",
            action="append",
            choices=Status.values,
            help="With this status (repeatable).",
        )
        select.add_argument("--model", help="With this model id.")
        select.add_argument(
            "--kind",
            dest="kinds",
            action="append",
            choices=GenerationRequest.Kind.values,
            help="Of this kind (repeatable); image inputs are sent again from storage.",
        )
        select.add_argument(
            "--created-before",
            type=date_or_datetime,
            metavar="DATE",
            help="Created before this ISO date or datetime.",
        )
        select.add_argument(
            "--created-after",
            type=date_or_datetime,
            metavar="DATE",
            help="Created at or after this ISO date or datetime.",
        )
        select.add_argument(
            "--prompt-contains",
            metavar="TEXT",
            help="Whose prompt contains TEXT (case-insensitive).",
        )
        select.add_argument(
            "--missing-files",
            action="store_true",
            help="Whose current images are missing from storage.",
        )
        select.add_argument(
            "--stale",
            action="store_true",
            help="Stuck in queued/processing (no progress for STALE_AFTER s).",
        )
        select.add_argument(
            "--resume",
            metavar="BATCH",
            help="Continue an interrupted run: its unfinished requests.",
        )
        select.add_argument("--limit", type=positive_int, metavar="N", help="At most N requests.")
        run = parser.add_argument_group("how")
        run.add_argument(
            "--keep-seed",
            action="store_true",
            help="Send each seeded request's seed again: the same job repeated, paid again. "
            "By default a seeded request gets a new random seed, for new images.",
        )
        run.add_argument(
            "--dry-run",
            action="store_true",
            help="List what would run; call nothing, change nothing.",
        )
        mode = run.add_mutually_exclusive_group()
        mode.add_argument(
            "--enqueue",
            action="store_true",
            help="Hand the work to the task backend instead of running it here.",
        )
        mode.add_argument(
            "--concurrency",
            type=positive_int,
            default=4,
            metavar="N",
            help="Requests run at once in this process (default 4).",
        )
        run.add_argument(
            "--fallback-model",
            dest="fallback_models",
            action="append",
            metavar="MODEL",
            help="Try this model when a request's model fails (repeatable, in order); "
            "recorded on each request run, replacing its own list.",
        )
        run.add_argument(
            "--yes",
            action="store_true",
            help=f"Do not ask before running more than {CONFIRM_ABOVE} requests.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        fallback_models = self.fallback_models(options["fallback_models"])
        if options["resume"]:
            self.check_batch(options["resume"])
        generations = list(self.select(options))
        if not generations:
            self.stdout.write("No generation request matches.")
            return
        self.resuming = bool(options["resume"])
        self.keep_seed = options["keep_seed"]
        # Only the selected requests: a site's whole backlog is not this run's business.
        ids = [generation.pk for generation in generations]
        among = ids if len(ids) <= STALE_CHECK_IDS else None
        self.stale = {generation.pk for generation in pipeline.stale_requests(among=among)}
        if options["dry_run"]:
            self.list_plan(generations)
            return
        self.confirm(len(generations), options["yes"])
        if fallback_models is not None:
            self.set_fallbacks(generations, fallback_models)
        batch = options["resume"] or uuid.uuid4().hex[:12]
        self.stdout.write(
            f"Batch {batch}: {len(generations)} request(s). If interrupted, continue with "
            f"--resume {batch}"
        )
        summary = Summary()
        try:
            if options["enqueue"]:
                self.enqueue(generations, batch, summary)
            else:
                self.run_here(generations, batch, options["concurrency"], summary)
        except KeyboardInterrupt:
            self.stderr.write(f"\nInterrupted. Continue with: --resume {batch}")
            self.report(summary)
            sys.exit(130)
        self.report(summary)
        problems = []
        if summary.failures:
            problems.append(f"{len(summary.failures)} request(s) failed")
        if summary.over_budget:
            problems.append(f"{len(summary.over_budget)} request(s) skipped: daily budget reached")
        if problems:
            raise CommandError("; ".join(problems) + ".")

    def fallback_models(self, given: list[str] | None) -> list[str] | None:
        """``--fallback-model`` values, checked (None when the option was not given)."""
        if not given:
            return None
        try:
            return clean_model_ids(given)
        except ValueError as exc:
            raise CommandError(f"--fallback-model: {exc}") from exc

    def check_batch(self, batch: str) -> None:
        """Refuse ``--resume`` with a batch id no request carries (a typo, another site)."""
        if not GenerationRequest.objects.filter(regeneration_batch=batch).exists():
            raise CommandError(
                f"--resume {batch}: no request belongs to batch {batch!r}; the id is printed "
                "first by the run to resume (Batch <id>: ...).",
                returncode=2,
            )

    def set_fallbacks(self, generations: list[GenerationRequest], models: list[str]) -> None:
        """Record ``models`` as the fallbacks of the requests this run starts."""
        ids = [generation.pk for generation in generations]
        GenerationRequest.objects.filter(pk__in=ids).update(fallback_models=models)
        for generation in generations:
            generation.fallback_models = models

    # selection -----------------------------------------------------------------------

    def select(self, options: dict[str, Any]) -> Iterable[GenerationRequest]:
        # Oldest first by date (then id): the order the list indexes serve for every filter.
        generations: QuerySet[GenerationRequest] = GenerationRequest.objects.order_by(
            "created_at", "pk"
        )
        if options["resume"]:
            generations = generations.filter(regeneration_batch=options["resume"]).exclude(
                status__in=(Status.SUCCEEDED, Status.REFUSED)
            )
        lookups = {lookup: options[o] for o, lookup in SELECT_LOOKUPS.items() if options[o]}
        generations = generations.filter(**lookups)
        if options["stale"]:
            stale = [generation.pk for generation in pipeline.stale_requests()]
            generations = generations.filter(pk__in=stale)
        if options["missing_files"]:
            generations = generations.filter(pk__in=requests_with_missing_files(generations))
        if options["limit"]:
            generations = generations[: options["limit"]]
        return generations

    def list_plan(self, generations: list[GenerationRequest]) -> None:
        self.stdout.write(f"Dry run: {len(generations)} request(s) would run; nothing was called.")
        estimate = Decimal(0)
        unpriced: Counter[str] = Counter()  # model -> requests it would run with no price
        for generation in generations:
            action = self.action_for(
                generation, generation.regeneration_batch if self.resuming else ""
            )
            if action == "regenerate":
                known = costs.known_estimate(generation)
                if known is None:
                    unpriced[costs.estimated_model(generation)] += 1
                estimate += known or 0
            self.stdout.write(
                f"  #{generation.pk:<6} {generation.status:<10} {generation.model_id or '-':<16} "
                f"{action:<10} {generation.prompt_preview(50)}"
            )
        models = ", ".join(unpriced)
        what = f"request(s) of a model with no price: {models}"
        text = cost_text(estimate, unpriced.total(), what)
        self.stdout.write(f"Estimated cost (PRICES): {text}.")

    def confirm(self, count: int, yes: bool) -> None:
        if yes or count <= CONFIRM_ABOVE:
            return
        question = f"Run {count} generation requests? ModelsLab bills each new job. [y/N] "
        if not sys.stdin.isatty():
            raise CommandError(f"{count} requests selected: pass --yes to run them unattended.")
        if input(question).strip().lower() not in ("y", "yes"):
            raise CommandError("Cancelled; nothing was run.")

    # running -------------------------------------------------------------------------

    def action_for(self, generation: GenerationRequest, batch: str) -> str:
        """What this run does with ``request``: the dry run prints it, the real run does it.

        - "continue": stuck, or left in flight by the interrupted run being resumed: its job is
          polled or its outputs copied (never a second job), or it fails after MAX_ATTEMPTS;
        - "skip": in flight with a live worker;
        - "retry": failed in the run being resumed: retried the safe way (pipeline.submit);
        - "regenerate": a new provider job; earlier images are kept.
        """
        if generation.status in (Status.QUEUED, Status.PROCESSING):
            return "continue" if self.resuming or generation.pk in self.stale else "skip"
        if generation.status == Status.FAILED and batch and generation.regeneration_batch == batch:
            return "retry"
        return "regenerate"

    def start(
        self, generation: GenerationRequest, batch: str, summary: Summary, *, enqueue: bool
    ) -> bool:
        """Queue one request as :meth:`action_for` says; False when it was not started.

        A request a daily budget refuses is left as it was and noted in ``summary.over_budget``;
        one whose parameters ModelsLab would refuse, in ``summary.failures``.
        """
        try:
            return self._start(generation, batch, enqueue=enqueue)
        except BudgetExceeded as exc:
            summary.over_budget[generation.pk] = str(exc)
        except InvalidParameters as exc:
            summary.failures[generation.pk] = str(exc)
        return False

    def _start(self, generation: GenerationRequest, batch: str, *, enqueue: bool) -> bool:
        action = self.action_for(generation, batch if self.resuming else "")
        if action == "continue":
            return pipeline.pick_up(generation, enqueue=enqueue)
        if action == "retry":
            pipeline.submit(generation, enqueue=enqueue)  # polls or copies when it can
            return True
        if action == "regenerate":
            try:
                pipeline.regenerate(
                    generation, keep_seed=self.keep_seed, batch=batch, enqueue=enqueue
                )
            except GenerationInProgress:
                return False
            return True
        return False

    def enqueue(self, generations: list[GenerationRequest], batch: str, summary: Summary) -> None:
        for generation in generations:
            if self.start(generation, batch, summary, enqueue=True):
                summary.outcomes["enqueued"] += 1
            elif generation.pk not in summary.over_budget:
                summary.outcomes["skipped"] += 1

    def run_here(
        self, generations: list[GenerationRequest], batch: str, concurrency: int, summary: Summary
    ) -> None:
        """Run the requests here with ``pipeline.run``, at most ``concurrency`` jobs at
        ModelsLab at once: this thread marks them in selection order and hands them to
        ``2 * concurrency`` threads; a run gives its place back as soon as its job is over at
        ModelsLab, so the next job starts while its images are copied.

        Ctrl-C stops handing them out (marked ones stay queued for ``--resume``, unreached
        ones are left as they were); those already running are finished first, so none is
        left with a job in doubt. A second Ctrl-C stops at once (the threads are daemons).
        """
        cost_before = {generation.pk: generation.cost for generation in generations}
        progress = Progress(len(generations), self.write_now, self.stdout.isatty())
        marked: SimpleQueue[GenerationRequest | None] = SimpleQueue()
        finished: SimpleQueue[GenerationRequest | Exception | None] = SimpleQueue()
        stopping = threading.Event()
        jobs = threading.Semaphore(concurrency)

        def work() -> None:
            try:
                while (generation := marked.get()) is not None and not stopping.is_set():
                    jobs.acquire()  # given back by run as soon as the job is over there
                    if stopping.is_set():
                        jobs.release()
                        break
                    try:
                        finished.put(pipeline.run(generation.pk, jobs=jobs))
                    except Exception as exc:  # raised again by collect(), below
                        finished.put(exc)
            finally:
                connection.close()
                finished.put(None)  # this thread is over

        threads = min(2 * concurrency, len(generations))
        for _ in range(threads):
            threading.Thread(target=work, daemon=True).start()

        def collect() -> None:
            nonlocal threads
            while threads:
                done = finished.get()
                if done is None:
                    threads -= 1
                elif isinstance(done, Exception):
                    raise done
                else:
                    summary.add(done, cost_before=cost_before[done.pk])  # no database
                    progress.step(done, summary)

        try:
            try:
                for generation in generations:
                    if self.start(generation, batch, summary, enqueue=False):
                        marked.put(generation)
                    else:
                        progress.total -= 1
                        if generation.pk not in summary.over_budget:
                            summary.outcomes["skipped"] += 1
            finally:
                for _ in range(threads):
                    marked.put(None)  # each thread ends at one
            collect()
        except KeyboardInterrupt:
            stopping.set()  # a thread ends instead of starting the next marked request
            collect()
            raise
        finally:
            stopping.set()
            progress.finish()

    def write_now(self, text: str) -> None:
        """Write ``text`` as is (``OutputWrapper`` would add a newline) and flush it."""
        self.stdout.write(text, ending="")
        self.stdout.flush()

    def report(self, summary: Summary) -> None:
        outcomes = summary.outcomes + Counter({"skipped (budget)": len(summary.over_budget)})
        counts = ", ".join(f"{n} {status}" for status, n in sorted(outcomes.items()))
        self.stdout.write(f"Done: {counts or 'nothing ran'}.")
        images, size = summary.stored()
        self.stdout.write(f"Images stored: {images} ({size:,} bytes).")
        if summary.ran:
            what = "job(s) with no cost reported and no price in PRICES"
            self.stdout.write(f"Cost: {cost_text(summary.cost, summary.unknown_costs(), what)}.")
        if summary.produced_by:
            models = ", ".join(f"{model} {n}" for model, n in summary.produced_by.most_common())
            self.stdout.write(f"Produced by: {models}.")
        for label, found in (("Failed", summary.failures), ("Refused", summary.refusals)):
            for reason, n in Counter(found.values()).most_common():
                ids = [str(pk) for pk, why in found.items() if why == reason]
                self.stdout.write(f"{label} ({n}): {reason} [#{', #'.join(ids)}]")
        if summary.over_budget:  # the amounts differ from one to the next: the first says why
            skipped = ", #".join(str(pk) for pk in summary.over_budget)
            first = next(iter(summary.over_budget.values()))
            self.stdout.write(
                f"Skipped (budget) ({len(summary.over_budget)}): left as they were, nothing sent. "
                f"{first} [#{skipped}]"
            )
