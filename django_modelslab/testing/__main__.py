"""Run the ModelsLab emulator in the foreground: ``python -m django_modelslab.testing``."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from .emulator import MODES, Emulator


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m django_modelslab.testing",
        description="A local ModelsLab v6 image API for tests and offline demos.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8777, help="0 picks a free port")
    parser.add_argument("--mode", choices=MODES, default="success")
    parser.add_argument("--eta", type=float, default=0.2, help="seconds before a job is ready")
    parser.add_argument("--pending-fetches", type=int, default=1)
    parser.add_argument("--ttl", type=float, default=86400.0, help="output URL lifetime (s)")
    parser.add_argument("--latency", type=float, default=0.0, help="sleep per generate call")
    parser.add_argument("--image-format", choices=("png", "jpeg", "webp"), default="png")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help="accept only this key (repeatable); default: any key",
    )
    parser.add_argument(
        "--max-queued-jobs",
        type=int,
        default=None,
        help="answer 429 past this many jobs at once, as ModelsLab's plans do (5, 10, 15)",
    )
    parser.add_argument("--errors-as-200", action="store_true")
    parser.add_argument("--webhook-duplicates", type=int, default=0)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
    )
    emulator = Emulator(
        args.host,
        args.port,
        mode=args.mode,
        eta=args.eta,
        pending_fetches=args.pending_fetches,
        url_ttl=args.ttl,
        api_keys=args.api_keys,
        latency=args.latency,
        image_format=args.image_format,
        errors_as_200=args.errors_as_200,
        webhook_duplicates=args.webhook_duplicates,
        max_queued_jobs=args.max_queued_jobs,
    )
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    emulator.start()
    print(emulator.base_url, flush=True)
    print("ModelsLab emulator running; Ctrl-C to stop.", file=sys.stderr, flush=True)
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
