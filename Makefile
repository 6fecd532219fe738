# django-modelslab: `make demo` and `make test` work from a fresh clone (see README).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON311 ?= $(shell python3 -c 'import sys; print(sys.executable)')
PYTHON312 ?= $(shell p=$$(pyenv prefix 3.12 2>/dev/null) && echo $$p/bin/python3.12 || command -v python3.12)
UV_VERSION := 0.13.8
UV := .tools/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_NO_PROGRESS := 1

VENV := .venv
VENV61 := .venv-dj61
# The demo's own environment: the package's runtime dependencies only, as users install it.
VENVDEMO := .venv-demo
# The Wagtail demo's: the same plus the wagtail extra.
VENVWAGTAIL := .venv-demo-wagtail

PG_TESTS := tests/test_workers.py tests/test_provider_slots.py tests/test_pipeline.py tests/test_webhooks.py \
	tests/test_renditions.py tests/test_regenerate_images.py tests/test_api.py tests/test_api_schema.py \
	tests/test_scale.py

.PHONY: help demo demo-wagtail test test-dj52 test-dj61 test-pg lint migrations-check docs bench clean \
	system-deps faults package-check

help:
	@echo "make demo   - set up, generate images offline (bundled emulator), serve the admin"
	@echo "make demo-wagtail - the same as a small Wagtail site (home page, admin at /cms/)"
	@echo "make test   - set up and run the whole suite on Django 5.2/Py3.11 and 6.1/Py3.12"
	@echo "make docs   - build the documentation (warnings are errors)"
	@echo "make bench  - pipeline, storage memory and renditions (also in Wagtail) benchmarks"
	@echo "make package-check - build the sdist and wheel, install it, make a site from the README"

# Debian packages the real-part tests use: headless Chromium and a PostgreSQL server.
system-deps:
	@if command -v chromium >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; \
	then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium postgresql >/dev/null; \
	else \
		echo "Needs Debian packages chromium and postgresql (run as root, or install them)"; \
		exit 1; \
	fi

$(UV):
	python3 -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --extra c2pa --group django52 --python "$(PYTHON311)"
	@touch $@

$(VENV61)/.synced: $(UV) pyproject.toml uv.lock
	UV_PROJECT_ENVIRONMENT=$(VENV61) $(UV) sync --frozen --extra c2pa --group django61 --python "$(PYTHON312)"
	@touch $@

$(VENVDEMO)/.synced: $(UV) pyproject.toml uv.lock
	UV_PROJECT_ENVIRONMENT=$(VENVDEMO) $(UV) sync --frozen --no-default-groups --group django52 \
		--python "$(PYTHON311)"
	@touch $@

demo: $(VENVDEMO)/.synced
	$(VENVDEMO)/bin/python -m example_project.demo

$(VENVWAGTAIL)/.synced: $(UV) pyproject.toml uv.lock
	UV_PROJECT_ENVIRONMENT=$(VENVWAGTAIL) $(UV) sync --frozen --no-default-groups --group django52 \
		--extra wagtail --python "$(PYTHON311)"
	@touch $@

demo-wagtail: $(VENVWAGTAIL)/.synced
	$(VENVWAGTAIL)/bin/python -m example_project.wagtail_demo

# ruff, then the layer and import contracts ([tool.importlinter] in pyproject.toml).
lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache --no-logo

migrations-check: $(VENV)/.synced $(VENV61)/.synced
	DJANGO_SETTINGS_MODULE=tests.settings $(VENV)/bin/python -m django makemigrations --check --dry-run django_modelslab
	DJANGO_SETTINGS_MODULE=tests.settings $(VENV61)/bin/python -m django makemigrations --check --dry-run django_modelslab
	DJANGO_SETTINGS_MODULE=tests.settings_wagtail $(VENV)/bin/python -m django makemigrations --check --dry-run modelslab_wagtail
	DJANGO_SETTINGS_MODULE=tests.settings_wagtail $(VENV61)/bin/python -m django makemigrations --check --dry-run modelslab_wagtail

# The suite runs with a sentinel API key (tests/sentinel.py): any test fails where the key
# shows up in a log record, an exception, an HTTP response or a database row. On Django 6.1
# the key is configured with a trailing newline, as read from a secrets file (it is stripped).
# tests/wagtail/ runs on its own with Wagtail's apps installed, with Wagtail's image model
# and then with a custom one (WAGTAILIMAGES_IMAGE_MODEL: only the library tests care).
WAGTAIL_TESTS := pytest -q --ds=tests.settings_wagtail tests/wagtail
WAGTAIL_CUSTOM_TESTS := pytest -q --ds=tests.settings_wagtail_custom tests/wagtail/test_library.py

test-dj52: system-deps $(VENV)/.synced
	MODELSLAB_SENTINEL_KEY=1 $(VENV)/bin/python -m pytest
	MODELSLAB_SENTINEL_KEY=1 $(VENV)/bin/python -m $(WAGTAIL_TESTS)
	MODELSLAB_SENTINEL_KEY=1 $(VENV)/bin/python -m $(WAGTAIL_CUSTOM_TESTS)

test-dj61: system-deps $(VENV61)/.synced
	MODELSLAB_SENTINEL_KEY=newline $(VENV61)/bin/python -m pytest
	MODELSLAB_SENTINEL_KEY=newline $(VENV61)/bin/python -m $(WAGTAIL_TESTS)
	MODELSLAB_SENTINEL_KEY=newline $(VENV61)/bin/python -m $(WAGTAIL_CUSTOM_TESTS)

# Locking, workers and webhooks again on PostgreSQL (a throwaway cluster per stack).
test-pg: system-deps $(VENV)/.synced $(VENV61)/.synced
	$(VENV)/bin/python -m tests.pgcluster -- $(VENV)/bin/python -m pytest -q $(PG_TESTS)
	$(VENV61)/bin/python -m tests.pgcluster -- $(VENV61)/bin/python -m pytest -q $(PG_TESTS)

# Fault matrix -> docs/reliability.md (CI runs it).
faults: $(VENV)/.synced
	$(VENV)/bin/python -m tests.faults_report

# The sdist and wheel as users get them: twine check, the wheel's contents, every module
# imported from it in a fresh venv, and a new site made from the README's blocks
# (tests/test_install.py; test-dj52 and test-dj61 run it too, each on its own stack).
package-check: system-deps $(VENV)/.synced
	$(VENV)/bin/python -m pytest -q tests/test_install.py

docs: $(VENV)/.synced
	$(VENV)/bin/mkdocs build --strict --site-dir site

test: lint migrations-check test-dj52 test-dj61 test-pg faults docs

bench: $(VENV)/.synced
	$(VENV)/bin/python bench/pipeline.py
	$(VENV)/bin/python bench/storage_memory.py
	$(VENV)/bin/python bench/renditions.py
	$(VENV)/bin/python bench/wagtail_renditions.py

clean:
	rm -rf $(VENV) $(VENV61) $(VENVDEMO) $(VENVWAGTAIL) .tools site dist .demo .pytest_cache .ruff_cache .mypy_cache
