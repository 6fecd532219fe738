"""The package as users get it: the sdist and the wheel, and a new site made from the README.

The wheel is built with uv (hatchling), checked with ``twine check`` and installed into a
fresh virtualenv with this stack's Django; the other dependencies are held to the versions
this environment was synced with from ``uv.lock``, so CI is reproducible. Every module is
imported from it, then the test does what a new user does: ``django-admin startproject``,
the README's "Use it in your project" blocks pasted as they are, ``check``, ``migrate``,
the bundled emulator (``python -m django_modelslab.testing``), ``runserver``, and the admin's
"Generate" in Chromium, where every image of the request's page must load.

``make package-check`` runs this file alone; the suite runs it on both stacks.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import django
import pytest

from .pgcluster import free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
QUICKSTART = ROOT / "docs" / "quickstart.md"
SECTION = "## Use it in your project"
#: Where the README's emulator block points; the test's emulator listens on a free port.
README_EMULATOR = "http://127.0.0.1:8777/api"

ALL_IMAGES_LOADED = """() => {
    const images = [...document.images];
    return images.length > 0 && images.every(img => img.complete && img.naturalWidth > 0);
}"""


def python_blocks(markdown: str) -> dict[str, str]:
    """The ```python blocks under "Use it in your project", by the comment on their first line.

    ``# settings.py`` and ``# urls.py`` are appended to a new project's files as they are;
    ``# settings.py, ... emulator ...`` points the site at the bundled emulator.
    """
    assert SECTION in markdown
    section = markdown.split(SECTION, 1)[1].split("\n## ", 1)[0]
    found: dict[str, str] = {}
    for block in re.findall(r"^```python\n(.*?)^```", section, re.DOTALL | re.MULTILINE):
        first = block.splitlines()[0]
        if first in ("# settings.py", "# urls.py"):
            name = first[2:]
        elif first.startswith("# settings.py") and "emulator" in first:
            name = "emulator"
        else:
            continue
        assert name not in found, f"two {name!r} blocks"
        found[name] = block
    assert set(found) == {"settings.py", "urls.py", "emulator"}, sorted(found)
    return found


def find_uv() -> str:
    for candidate in (os.environ.get("UV"), ROOT / ".tools" / "bin" / "uv", shutil.which("uv")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.fail("uv not found: make installs it into .tools/ (or set UV=/path/to/uv)")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without the suite's Django, ModelsLab and venv variables."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "MODELSLAB_", "PYTHON", "VIRTUAL_ENV", "UV_PROJECT"))
    }
    env.update(UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1", **extra)
    return env


def run(command: list[str | Path], cwd: Path, env: dict[str, str] | None = None, check=True):
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def one(paths: Iterator[Path]) -> Path:
    (path,) = list(paths)
    return path


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """``uv build``: the sdist, then the wheel built from it."""
    out = tmp_path_factory.mktemp("dist")
    run([find_uv(), "build", "--out-dir", out, ROOT], cwd=ROOT)
    return {"sdist": one(out.glob("*.tar.gz")), "wheel": one(out.glob("*.whl"))}


@pytest.fixture(scope="module")
def venv_python(dists, tmp_path_factory) -> Path:
    """A fresh virtualenv holding the wheel and this stack's Django, nothing of the checkout."""
    return make_venv(dists["wheel"], tmp_path_factory.mktemp("venv"))


@pytest.fixture(scope="module")
def wagtail_venv_python(dists, tmp_path_factory) -> Path:
    """The same with the ``wagtail`` extra installed."""
    return make_venv(f"{dists['wheel']}[wagtail]", tmp_path_factory.mktemp("venv-wagtail"))


def make_venv(wheel: Path | str, root: Path) -> Path:
    locked = sorted(
        f"{dist.metadata['Name']}=={dist.version}"
        for dist in importlib.metadata.distributions()
        if dist.metadata["Name"] and dist.metadata["Name"].lower() != "django-modelslab"
    )
    constraints = root / "constraints.txt"
    constraints.write_text("\n".join(locked) + "\n")
    uv = find_uv()
    run([uv, "venv", "--quiet", "--python", sys.executable, root / "venv"], cwd=root)
    python = root / "venv" / "bin" / "python"
    run(
        [uv, "pip", "install", "--quiet", "--python", python, "--constraint", constraints,
         wheel, f"django=={django.get_version()}"],
        cwd=root,
    )  # fmt: skip
    return python


def test_quickstart_shows_the_readme_blocks():
    assert python_blocks(QUICKSTART.read_text()) == python_blocks(README.read_text())


@pytest.mark.slow
def test_sdist_and_wheel_pass_twine_check(dists):
    result = run(
        [sys.executable, "-m", "twine", "check", "--strict", dists["sdist"], dists["wheel"]],
        cwd=ROOT,
    )
    assert result.stdout.count("PASSED") == 2, result.stdout


@pytest.mark.slow
def test_the_wheel_is_the_package_with_its_templates_static_files_and_migrations(dists):
    names = set(zipfile.ZipFile(dists["wheel"]).namelist())
    version = dists["wheel"].name.split("-")[1]
    assert {name.split("/")[0] for name in names} == {
        "django_modelslab",
        f"django_modelslab-{version}.dist-info",
    }  # no tests/, bench/, example_project/ or docs/
    source = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "django_modelslab").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert source - names == set()
    for folder in ("templates", "static", "migrations", "testing"):
        assert any(name.startswith(f"django_modelslab/{folder}/") for name in names), folder


@pytest.mark.slow
def test_the_sdist_carries_the_tests_and_docs_but_not_the_benchmarks(dists):
    with tarfile.open(dists["sdist"]) as sdist:
        top = {name.split("/")[1] for name in sdist.getnames() if "/" in name}
    assert {"django_modelslab", "tests", "docs", "example_project", "README.md"} <= top
    assert {"LICENSE", "pyproject.toml", "PKG-INFO"} <= top
    assert "bench" not in top


IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys
import django
from django.conf import settings

# With "wagtail" as argument, Wagtail's apps and the integration are installed too; without,
# the integration's modules are left out (Wagtail is an extra).
WAGTAIL = sys.argv[1:] == ["wagtail"]
INTEGRATION = "django_modelslab.contrib.wagtail."
wagtail_apps = [
    "wagtail.images", "wagtail", "modelcluster", "taggit", "django_modelslab.contrib.wagtail",
]
settings.configure(
    INSTALLED_APPS=[
        "django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
        "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
        "rest_framework", "rest_framework.authtoken", "drf_spectacular", "django_modelslab",
        *(wagtail_apps if WAGTAIL else []),
    ],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    STATIC_URL="/static/",
)
django.setup()
import django_modelslab

def fail(name):
    raise ImportError(name)

for info in pkgutil.walk_packages(django_modelslab.__path__, "django_modelslab.", onerror=fail):
    if info.name.startswith(INTEGRATION) and not WAGTAIL:
        continue
    importlib.import_module(info.name)
    print(info.name)
print(django_modelslab.__file__)
"""


def package_modules() -> set[str]:
    package = ROOT / "django_modelslab"
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in package.rglob("*.py")
        if path != package / "__init__.py"
    }


@pytest.mark.slow
def test_every_module_imports_from_the_installed_wheel(venv_python, tmp_path):
    result = run([venv_python, "-c", IMPORT_EVERY_MODULE], cwd=tmp_path)
    *imported, location = result.stdout.split()
    assert Path(location).is_relative_to(venv_python.parent.parent), location
    integration = {
        m for m in package_modules() if m.startswith("django_modelslab.contrib.wagtail.")
    }
    assert integration  # left out here: Wagtail is not installed
    assert set(imported) == package_modules() - integration
    missing = run([venv_python, "-c", "import wagtail"], cwd=tmp_path, check=False)
    assert "No module named 'wagtail'" in missing.stderr


@pytest.mark.slow
def test_the_wagtail_integration_imports_with_the_wagtail_extra(wagtail_venv_python, tmp_path):
    result = run([wagtail_venv_python, "-c", IMPORT_EVERY_MODULE, "wagtail"], cwd=tmp_path)
    *imported, location = result.stdout.split()
    assert Path(location).is_relative_to(wagtail_venv_python.parent.parent), location
    assert set(imported) == package_modules()


def start_emulator(python: Path, site: Path) -> tuple[subprocess.Popen, str]:
    with (site / "emulator.log").open("w") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [python, "-m", "django_modelslab.testing", "--port", "0"],
            cwd=site,
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    base_url = process.stdout.readline().strip()
    assert base_url.startswith("http://127.0.0.1:"), (site / "emulator.log").read_text()
    return process, base_url


def start_runserver(python: Path, site: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    origin = f"http://127.0.0.1:{free_port()}"
    with (site / "runserver.log").open("w") as log:
        process = subprocess.Popen(
            [python, "manage.py", "runserver", origin.removeprefix("http://"), "--noreload"],
            cwd=site,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"{origin}/admin/login/", timeout=2).close()
            return process, origin
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("runserver did not start:\n" + (site / "runserver.log").read_text())
            time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout:
        process.stdout.close()


@pytest.mark.slow
def test_a_new_site_from_the_readme_generates_and_its_admin_shows_the_images(
    venv_python, tmp_path, page
):
    blocks = python_blocks(README.read_text())
    site = tmp_path / "site"
    site.mkdir()
    run([venv_python.parent / "django-admin", "startproject", "mysite", site], cwd=tmp_path)
    with (site / "mysite" / "settings.py").open("a") as settings_py:
        settings_py.write("\n" + blocks["settings.py"])
    with (site / "mysite" / "urls.py").open("a") as urls_py:
        urls_py.write("\n" + blocks["urls.py"])
    manage = [venv_python, "manage.py"]

    # No key and no emulator: the README's settings reach the helpful E001 (no traceback).
    result = run([*manage, "check"], cwd=site, check=False)
    assert result.returncode == 1
    assert "django_modelslab.E001" in result.stderr
    assert "Traceback" not in result.stderr

    emulator, base_url = start_emulator(venv_python, site)
    try:
        # The README's emulator block, with the port this emulator got.
        offline = blocks["emulator"].replace(README_EMULATOR, base_url)
        assert offline != blocks["emulator"], f"{README_EMULATOR} is not in the README block"
        with (site / "mysite" / "settings.py").open("a") as settings_py:
            settings_py.write("\n" + offline)
        key = f"new-site-key-{secrets.token_hex(8)}"
        env = clean_env(MODELSLAB_API_KEY=key)
        result = run([*manage, "check"], cwd=site, env=env)
        assert "System check identified no issues" in result.stdout, result.stderr
        run([*manage, "migrate", "--verbosity", "0"], cwd=site, env=env)
        password = secrets.token_urlsafe(12)
        superuser = {"USERNAME": "admin", "EMAIL": "admin@example.com", "PASSWORD": password}
        superuser_env = {f"DJANGO_SUPERUSER_{name}": value for name, value in superuser.items()}
        run([*manage, "createsuperuser", "--noinput"], cwd=site, env={**env, **superuser_env})
        server, origin = start_runserver(venv_python, site, env)
        try:
            # The API is wired: an anonymous call is asked for a token.
            with pytest.raises(urllib.error.HTTPError) as answer:
                urllib.request.urlopen(f"{origin}/api/modelslab/generations/")
            assert answer.value.code == 401
            assert answer.value.headers["WWW-Authenticate"].startswith("Bearer")

            page.goto(f"{origin}/admin/login/?next=/admin/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", password)
            page.click("input[type=submit]")
            page.wait_for_url(f"{origin}/admin/")
            page.goto(f"{origin}/admin/django_modelslab/generationrequest/add/")
            page.fill("#id_prompt", "a red fox in fresh snow")
            page.fill("#id_width", "256")
            page.fill("#id_height", "256")
            page.click("input[name=_generate]")
            page.wait_for_selector(".modelslab-status--succeeded", timeout=30_000)
            assert re.search(r"/generationrequest/\d+/change/", page.url)

            for image in page.locator("img").all():  # thumbnails load lazily
                image.scroll_into_view_if_needed()
            page.wait_for_function(ALL_IMAGES_LOADED)
            sources = page.eval_on_selector_all(".modelslab-images img", "i => i.map(x => x.src)")
            assert sources, "no generated image on the request's page"
            assert all(src.startswith(f"{origin}/media/modelslab/") for src in sources), sources
            assert key not in page.content()
        finally:
            stop(server)
    finally:
        stop(emulator)

    stored = list((site / "media" / "modelslab").rglob("*.png"))
    assert len(stored) == 1
    assert not (site / "modelslab").exists()  # nothing lands in the working directory
    assert key not in (site / "runserver.log").read_text()
