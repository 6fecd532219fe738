"""The example project as a Wagtail site (make demo-wagtail): it migrates, passes its checks,
publishes a generated image from the library and its home page renders it with {% image %}."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent

RENDER_HOME = """
import django
django.setup()
from django.test import Client
response = Client().get("/", HTTP_HOST="127.0.0.1")
print(response.status_code)
print(response.content.decode())
"""


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.slow
def test_the_wagtail_example_boots_and_renders_a_generated_image(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MODELSLAB_", "DJANGO_"))
    }
    env.update(DEMO_SERVE="0", DEMO_DATA_DIR=str(tmp_path))
    out = run(["-m", "example_project.wagtail_demo"], env).stdout
    assert "Wagtail home page: http://127.0.0.1:8000/" in out
    shared = re.search(r"Library image #\d+: (modelslab/[0-9a-f]{2}/[0-9a-f]{64}\.png)", out)
    assert shared, out  # the library image names the generated file: no copy

    env.update(
        DJANGO_SETTINGS_MODULE="example_project.wagtail_settings",
        # As the demo runs it (the emulator), for the checks; nothing is generated.
        MODELSLAB_BASE_URL="http://127.0.0.1:9/api",
        MODELSLAB_EMULATOR_HOST="127.0.0.1",
    )
    checked = run(["-m", "django", "check"], env)
    assert "no issues" in checked.stdout
    migrations = run(["-m", "django", "makemigrations", "--check", "--dry-run"], env)
    assert "No changes detected" in migrations.stdout

    status, html = run(["-c", RENDER_HOME], env).stdout.split("\n", 1)
    assert status == "200", html
    img = re.search(r"<img [^>]*>", html)
    assert img, html
    assert 'width="480"' in img.group() and 'height="270"' in img.group()
    assert 'alt="a lighthouse on a cliff at dusk, oil painting"' in img.group()
    src = re.search(r'src="/media/([^"]+)"', img.group())
    assert src and src.group(1).startswith("images/"), img.group()
    assert (tmp_path / "media" / src.group(1)).is_file()  # the rendition Wagtail made
