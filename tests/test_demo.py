"""``make demo`` with DEMO_SERVE=0: the offline demo generates real, content-addressed files."""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_generates_images_offline(tmp_path):
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MODELSLAB_", "DJANGO_"))
    }
    env.update(DEMO_SERVE="0", DEMO_DATA_DIR=str(tmp_path))

    result = subprocess.run(
        [sys.executable, "-m", "example_project.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "bundled emulator" in out
    assert re.search(r"password '[^']{12,}'", out)
    assert "succeeded (cached)" in out
    article = re.search(
        r"Article with a generated hero: http://127\.0\.0\.1:8000/articles/(\d+)/", out
    )
    assert article, out
    with closing(sqlite3.connect(tmp_path / "db.sqlite3")) as db:
        (hero_file,) = db.execute(
            "SELECT image.image FROM articles_article article JOIN django_modelslab_generatedimage"
            " image ON image.id = article.hero_id WHERE article.id = ?",
            (int(article.group(1)),),
        ).fetchone()
    assert (tmp_path / "media" / hero_file).is_file()
    keys = re.findall(r"modelslab/[0-9a-f]{2}/[0-9a-f]{64}\.png", out)
    assert len(keys) >= 4
    for key in keys:
        data = (tmp_path / "media" / key).read_bytes()
        assert hashlib.sha256(data).hexdigest() == Path(key).stem
