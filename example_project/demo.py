"""``make demo``: generate real images through the whole pipeline, then serve the admin.

Without ``MODELSLAB_API_KEY`` the bundled ModelsLab emulator runs in this process (offline);
with it, the same code calls the real API. ``DEMO_SERVE=0`` stops after generating.
"""

from __future__ import annotations

import os
import secrets
import sys
import time

SAMPLE_PROMPTS = [
    ("a red fox in fresh snow, morning light", 42),
    ("a lighthouse on a cliff at dusk, oil painting", 7),
    ("a bowl of ramen, studio photo", None),
    # The first prompt again with the same seed: served from the cache, no API call.
    ("a red fox in fresh snow, morning light", 42),
]


def main() -> int:
    emulator = None
    if not os.environ.get("MODELSLAB_API_KEY"):
        from django_modelslab.testing import Emulator

        emulator = Emulator(mode="processing", eta=0.3, pending_fetches=1).start()
        os.environ["MODELSLAB_BASE_URL"] = emulator.base_url
        os.environ["MODELSLAB_EMULATOR_HOST"] = emulator.host
        print(f"No MODELSLAB_API_KEY set: using the bundled emulator at {emulator.base_url}")
    else:
        print("MODELSLAB_API_KEY is set: calling the real ModelsLab API.")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    settings.DATA_DIR.mkdir(parents=True, exist_ok=True)
    call_command("migrate", interactive=False, verbosity=0)
    failed = generate_samples()
    print_admin_credentials()
    if os.environ.get("DEMO_SERVE", "1") != "0":
        address = os.environ.get("DEMO_ADDR", "127.0.0.1:8000")
        print(f"Serving http://{address}/admin/  (Ctrl-C to stop)")
        print(f"Example page using the REST API: http://{address}/studio/")
        call_command("runserver", address, use_reloader=False)
    if emulator is not None:
        emulator.stop()
    return 1 if failed else 0


def generate_samples() -> int:
    from django_modelslab import pipeline
    from django_modelslab.models import GenerationRequest

    rows = []
    for prompt, seed in SAMPLE_PROMPTS:
        started = time.monotonic()
        request = pipeline.submit(
            GenerationRequest(prompt=prompt, seed=seed, width=512, height=512)
        )
        request.refresh_from_db()
        seconds = time.monotonic() - started
        images = list(request.images.all()) or [None]
        for image in images:
            rows.append(
                (
                    f"#{request.pk}",
                    request.status + (" (cached)" if request.cached_from_id else ""),
                    request.model_id,
                    image.image.name if image else request.error[:60],
                    f"{image.width}x{image.height} {image.bytes:,} B" if image else "",
                    f"{seconds:.2f}",
                )
            )
    print_table(("request", "status", "model", "image key", "size", "seconds"), rows)
    return sum(1 for row in rows if row[1].startswith("failed"))


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    line = "  ".join(f"{{:<{width}}}" for width in widths)
    print(line.format(*header))
    print(line.format(*("-" * width for width in widths)))
    for row in rows:
        print(line.format(*row))


def print_admin_credentials() -> None:
    from django.contrib.auth import get_user_model

    password = secrets.token_urlsafe(12)
    user, _ = get_user_model().objects.get_or_create(
        username="admin", defaults={"is_staff": True, "is_superuser": True}
    )
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    print(f"Admin login: username 'admin', password '{password}'")


if __name__ == "__main__":
    sys.exit(main())
