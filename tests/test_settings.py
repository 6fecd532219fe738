"""Settings are read at call time and checked at start-up with stable ids."""

from __future__ import annotations

import pytest
from django.core.checks import Error, Warning

from django_modelslab import pipeline
from django_modelslab.checks import check_settings
from django_modelslab.conf import DEFAULTS, get_setting, get_settings


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_defaults_fill_what_the_project_leaves_out(settings):
    settings.MODELSLAB = {"API_KEY": "k"}
    assert get_setting("BASE_URL") == DEFAULTS["BASE_URL"]
    assert get_setting("UPLOAD_PREFIX") == "modelslab/"


def test_override_settings_is_seen_at_call_time(settings):
    settings.MODELSLAB = {**settings.MODELSLAB, "DEFAULT_MODEL": "sdxl"}
    assert get_setting("DEFAULT_MODEL") == "sdxl"


def test_unknown_setting_name_raises():
    with pytest.raises(KeyError, match="NOPE"):
        get_setting("NOPE")


def test_test_settings_pass_the_checks():
    assert check_settings() == []


def test_missing_key_is_an_error_outside_the_emulator(settings):
    settings.MODELSLAB = {"BASE_URL": "https://modelslab.com/api"}
    messages = check_settings()
    assert ids(messages) == ["django_modelslab.E001"]
    assert isinstance(messages[0], Error)


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:8777/api", "http://localhost:1/api"])
def test_missing_key_is_fine_with_the_emulator(settings, base_url):
    settings.MODELSLAB = {"BASE_URL": base_url}
    assert check_settings() == []


def test_surrounding_whitespace_is_stripped_from_the_key_and_the_secrets(settings):
    secret = "a-long-enough-secret-for-the-check"
    settings.MODELSLAB = {
        **settings.MODELSLAB,
        "API_KEY": " the-key-from-a-file\r\n",
        "PUBLIC_BASE_URL": "https://example.com",
        "WEBHOOK_SECRETS": (f"{secret}\n", "\tanother-long-enough-secret-0123"),
    }
    assert get_setting("API_KEY") == "the-key-from-a-file"
    assert get_settings()["API_KEY"] == "the-key-from-a-file"
    expected = [secret, "another-long-enough-secret-0123"]
    assert get_setting("WEBHOOK_SECRETS") == get_settings()["WEBHOOK_SECRETS"] == expected
    assert pipeline.webhook_url() == f"https://example.com/modelslab/webhook/{secret}/"
    assert check_settings() == []


INNER = ["the key", "the\nkey", "the\x00key", "the\u200bkey", "the\u00a0key", "the\x7fkey"]


@pytest.mark.parametrize("key", INNER)
def test_a_key_with_whitespace_or_a_control_character_inside_is_an_error(settings, key):
    settings.MODELSLAB = {**settings.MODELSLAB, "API_KEY": f"{key}-0123456789\n"}
    messages = check_settings()
    assert ids(messages) == ["django_modelslab.E011"]
    assert "at position 4" in messages[0].msg
    for text in (messages[0].msg, messages[0].hint, str(messages[0])):
        assert "key-0123456789" not in text


@pytest.mark.parametrize("secret", INNER)
def test_a_webhook_secret_with_whitespace_inside_is_an_error(settings, secret):
    settings.MODELSLAB = {
        **settings.MODELSLAB,
        "WEBHOOK_SECRETS": ["a-long-enough-secret-0123", f"{secret}-0123456789-abcdefghij"],
    }
    messages = check_settings()
    assert ids(messages) == ["django_modelslab.E012"]
    assert "entry 2" in messages[0].msg and "at position 4" in messages[0].msg
    assert "0123456789-abcdefghij" not in str(messages[0])


def test_unknown_storage_alias(settings):
    settings.MODELSLAB = {**settings.MODELSLAB, "STORAGE": "nowhere"}
    messages = check_settings()
    assert ids(messages) == ["django_modelslab.E002"]
    assert "nowhere" in messages[0].msg


def test_default_storage_alias_may_be_absent(settings):
    settings.STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    assert check_settings() == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TIMEOUT", 0),
        ("MAX_WAIT", -1),
        ("POLL_INTERVAL", "2"),
        ("MAX_RETRIES", -1),
        ("MAX_RETRIES", 1.5),
        ("MAX_IMAGE_BYTES", True),
    ],
)
def test_bad_numbers(settings, name, value):
    settings.MODELSLAB = {**settings.MODELSLAB, name: value}
    messages = check_settings()
    assert ids(messages) == ["django_modelslab.E003"]
    assert name in messages[0].msg


def test_bad_base_url(settings):
    settings.MODELSLAB = {**settings.MODELSLAB, "BASE_URL": "modelslab.com/api"}
    assert ids(check_settings()) == ["django_modelslab.E004"]


def test_allowed_hosts_must_be_a_list(settings):
    settings.MODELSLAB = {**settings.MODELSLAB, "ALLOWED_DOWNLOAD_HOSTS": "127.0.0.1"}
    assert ids(check_settings()) == ["django_modelslab.E005"]


def test_typo_in_a_setting_name_warns(settings):
    settings.MODELSLAB = {**settings.MODELSLAB, "APIKEY": "x"}
    messages = check_settings()
    assert ids(messages) == ["django_modelslab.W001"]
    assert isinstance(messages[0], Warning)
    assert "APIKEY" in messages[0].msg


def test_settings_must_be_a_dict(settings):
    settings.MODELSLAB = ["not", "a", "dict"]
    assert ids(check_settings()) == ["django_modelslab.E010"]


@pytest.mark.django_db
def test_checks_run_through_manage_py_check(settings):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    settings.MODELSLAB = {**settings.MODELSLAB, "TIMEOUT": -5}
    with pytest.raises(SystemCheckError, match=r"django_modelslab\.E003"):
        call_command("check")


def test_unknown_task_backend(settings):
    settings.MODELSLAB = {**settings.MODELSLAB, "TASK_BACKEND": "images"}
    messages = check_settings()
    assert ids(messages) == ["django_modelslab.E009"]
    assert "images" in messages[0].msg


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"WEBHOOK_SECRETS": "one-string"}, "django_modelslab.E006"),
        (
            {"PUBLIC_BASE_URL": "example.com", "WEBHOOK_SECRETS": ["x" * 30]},
            "django_modelslab.E007",
        ),
        (
            {"PUBLIC_BASE_URL": "https://example.com", "WEBHOOK_SECRETS": ["short"]},
            "django_modelslab.W003",
        ),
        ({"MAX_ATTEMPTS": 0}, "django_modelslab.E003"),
    ],
)
def test_webhook_and_attempt_settings(settings, overrides, expected):
    settings.MODELSLAB = {**settings.MODELSLAB, **overrides}
    assert ids(check_settings()) == [expected]


@pytest.mark.urls("tests.urls_without_webhook")
def test_webhooks_need_the_url_included(settings):
    settings.MODELSLAB = {
        **settings.MODELSLAB,
        "PUBLIC_BASE_URL": "https://example.com",
        "WEBHOOK_SECRETS": ["a-long-enough-secret-for-the-check"],
    }
    assert ids(check_settings()) == ["django_modelslab.E008"]
