"""Settings are read at call time and checked at start-up with stable ids."""

from __future__ import annotations

import pytest
from django.core.checks import Error, Warning

from django_modelslab import pipeline
from django_modelslab.checks import check_settings, check_site_setup
from django_modelslab.conf import (
    DEFAULT_ALLOWED_DOWNLOAD_HOSTS,
    DEFAULTS,
    MODEL_ID,
    SETTINGS,
    get_setting,
    get_settings,
)
from django_modelslab.models import GenerationRequest

from .helpers import configure


def ids(messages) -> list[str]:
    return [message.id for message in messages]


def test_defaults_fill_what_the_project_leaves_out(settings):
    settings.MODELSLAB = {"API_KEY": "k"}
    assert get_setting("BASE_URL") == DEFAULTS["BASE_URL"]
    assert get_setting("UPLOAD_PREFIX") == "modelslab/"


def test_override_settings_is_seen_at_call_time(settings):
    configure(settings, DEFAULT_MODEL="sdxl")
    assert get_setting("DEFAULT_MODEL") == "sdxl"


def test_unknown_setting_name_raises():
    with pytest.raises(KeyError, match="NOPE"):
        get_setting("NOPE")


def test_test_settings_pass_the_checks():
    assert check_settings() == []


# The table (conf.SETTINGS): each setting's default and rules; each rule is a system check.

RULED = [name for name, setting in SETTINGS.items() if setting.rules]


def test_every_default_passes_its_own_rules():
    assert [
        (name, rule.id)
        for name in RULED
        for rule in SETTINGS[name].rules
        if rule.problem(DEFAULTS[name])
    ] == []


@pytest.mark.parametrize("name", RULED)
def test_each_rule_of_the_table_is_a_check_naming_the_setting(settings, name):
    """A value no rule accepts gets the setting's first rule, one Error, and no traceback
    from the checks that cross settings (they leave a bad value to the table)."""
    configure(settings, **{name: object()})
    errors = [message for message in check_settings() if isinstance(message, Error)]
    assert ids(errors) == [SETTINGS[name].rules[0].id]
    assert errors[0].msg.startswith(f"MODELSLAB[{name!r}] ")
    assert errors[0].hint


def test_a_rule_added_to_the_table_is_checked_with_the_default_as_hint(settings, monkeypatch):
    monkeypatch.setattr(SETTINGS["DEFAULT_MODEL"], "rules", (MODEL_ID,))
    configure(settings, DEFAULT_MODEL=" ")
    [message] = check_settings()
    assert message.id == "django_modelslab.E041"
    assert message.msg == "MODELSLAB['DEFAULT_MODEL'] must be a ModelsLab model id."
    assert message.hint == "The default is 'flux'."


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
    configure(
        settings,
        API_KEY=" the-key-from-a-file\r\n",
        PUBLIC_BASE_URL="https://example.com",
        WEBHOOK_SECRETS=(f"{secret}\n", "\tanother-long-enough-secret-0123"),
    )
    assert get_setting("API_KEY") == "the-key-from-a-file"
    assert get_settings()["API_KEY"] == "the-key-from-a-file"
    expected = [secret, "another-long-enough-secret-0123"]
    assert get_setting("WEBHOOK_SECRETS") == get_settings()["WEBHOOK_SECRETS"] == expected
    assert pipeline.webhook_url() == f"https://example.com/modelslab/webhook/{secret}/"
    assert check_settings() == []


INNER = ["the key", "the\nkey", "the\x00key", "the\u200bkey", "the\u00a0key", "the\x7fkey"]


@pytest.mark.parametrize("key", INNER)
def test_a_key_with_whitespace_or_a_control_character_inside_is_an_error(settings, key):
    configure(settings, API_KEY=f"{key}-0123456789\n")
    messages = check_settings()
    assert ids(messages) == ["django_modelslab.E011"]
    assert "at position 4" in messages[0].msg
    for text in (messages[0].msg, messages[0].hint, str(messages[0])):
        assert "key-0123456789" not in text


@pytest.mark.parametrize("secret", INNER)
def test_a_webhook_secret_with_whitespace_inside_is_an_error(settings, secret):
    configure(
        settings, WEBHOOK_SECRETS=["a-long-enough-secret-0123", f"{secret}-0123456789-abcdefghij"]
    )
    messages = check_settings()
    assert ids(messages) == ["django_modelslab.E012"]
    assert "entry 2" in messages[0].msg and "at position 4" in messages[0].msg
    assert "0123456789-abcdefghij" not in str(messages[0])


def test_unknown_storage_alias(settings):
    configure(settings, STORAGE="nowhere")
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
        ("URL_SIGNING_WINDOW", -1),
        ("URL_SIGNING_WINDOW", 1.5),
    ],
)
def test_bad_numbers(settings, name, value):
    configure(settings, **{name: value})
    messages = check_settings()
    assert ids(messages) == ["django_modelslab.E003"]
    assert name in messages[0].msg


def test_a_signing_window_must_leave_presigned_urls_within_what_s3_allows(settings):
    options = {"bucket_name": "b", "access_key": "a", "secret_key": "s", "region_name": "x"}
    settings.STORAGES = {
        **settings.STORAGES,
        "modelslab": {
            "BACKEND": "django_modelslab.storage.ContentAddressedS3Storage",
            "OPTIONS": {**options, "querystring_expire": 6 * 24 * 3600},
        },
    }
    configure(settings, URL_SIGNING_WINDOW=2 * 24 * 3600)
    messages = check_settings()
    assert ids(messages) == ["django_modelslab.E013"]
    assert "URL_SIGNING_WINDOW" in messages[0].msg and "querystring_expire" in messages[0].msg

    configure(settings, URL_SIGNING_WINDOW=24 * 3600)  # 7 days
    assert check_settings() == []
    configure(settings, URL_SIGNING_WINDOW=0)  # off
    assert check_settings() == []


def test_bad_base_url(settings):
    configure(settings, BASE_URL="modelslab.com/api")
    assert ids(check_settings()) == ["django_modelslab.E004"]


def test_allowed_hosts_must_be_a_list(settings):
    configure(settings, ALLOWED_DOWNLOAD_HOSTS="127.0.0.1")
    assert ids(check_settings()) == ["django_modelslab.E005"]


def test_typo_in_a_setting_name_warns(settings):
    configure(settings, APIKEY="x")
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

    configure(settings, TIMEOUT=-5)
    with pytest.raises(SystemCheckError, match=r"django_modelslab\.E003"):
        call_command("check")


def test_unknown_task_backend(settings):
    configure(settings, TASK_BACKEND="images")
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
    configure(settings, **overrides)
    assert ids(check_settings()) == [expected]


@pytest.mark.urls("tests.urls_without_webhook")
def test_webhooks_need_the_url_included(settings):
    configure(
        settings,
        PUBLIC_BASE_URL="https://example.com",
        WEBHOOK_SECRETS=["a-long-enough-secret-for-the-check"],
    )
    assert ids(check_settings()) == ["django_modelslab.E008"]


# A new site's mistakes (check_site_setup): ids W060-W062 and E060.


def test_test_settings_pass_the_site_checks():
    assert check_site_setup() == []


@pytest.mark.parametrize(
    ("base_url", "hosts", "expected"),
    [
        ("http://127.0.0.1:8777/api", list(DEFAULT_ALLOWED_DOWNLOAD_HOSTS), ["W060"]),
        ("http://127.0.0.1:8777/api", [".0.0.1", "localhost"], ["W060"]),
        ("http://localhost:8777/api", ["127.0.0.1"], ["W060"]),
        ("http://127.0.0.1:8777/api", ["127.0.0.1"], []),
        ("http://localhost:8777/api", ["localhost"], []),
        ("https://modelslab.com/api", list(DEFAULT_ALLOWED_DOWNLOAD_HOSTS), []),
        ("http://127.0.0.1:8777/api", "127.0.0.1", []),  # E005's business
    ],
)
def test_emulator_base_url_needs_its_host_allowed(settings, base_url, hosts, expected):
    settings.MODELSLAB = {"BASE_URL": base_url, "ALLOWED_DOWNLOAD_HOSTS": hosts}
    messages = check_site_setup()
    assert ids(messages) == [f"django_modelslab.{id_}" for id_ in expected]
    assert all(isinstance(message, Warning) for message in messages)
    if expected:
        host = base_url.split("/")[2].split(":")[0]
        assert f'Add "{host}"' in messages[0].hint


@pytest.mark.django_db
def test_what_w060_warns_about_happens_at_the_first_download(
    settings, emulator, django_capture_on_commit_callbacks
):
    """The check passes (no error) with the defaults, then the first generation fails."""
    settings.MODELSLAB = {
        "BASE_URL": emulator.base_url,
        "ALLOWED_DOWNLOAD_HOSTS": list(DEFAULT_ALLOWED_DOWNLOAD_HOSTS),
    }
    assert check_settings() == []
    assert ids(check_site_setup()) == ["django_modelslab.W060"]
    with django_capture_on_commit_callbacks(execute=True):
        request = pipeline.submit(GenerationRequest(prompt="a kite", width=256, height=256))
    request.refresh_from_db()
    assert request.status == GenerationRequest.Status.FAILED
    assert "ALLOWED_DOWNLOAD_HOSTS" in request.error
    assert emulator.calls["text2img"] == 1


@pytest.mark.parametrize(("name", "expected"), [("MEDIA_ROOT", "W061"), ("MEDIA_URL", "W062")])
def test_images_on_the_file_system_need_media_settings(settings, name, expected):
    setattr(settings, name, "")
    messages = check_site_setup()
    assert ids(messages) == [f"django_modelslab.{expected}"]
    assert name in messages[0].msg


def test_media_settings_do_not_matter_for_other_storages(settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "modelslab": {"BACKEND": "django.core.files.storage.InMemoryStorage"},
    }
    settings.MEDIA_ROOT = settings.MEDIA_URL = ""
    assert check_site_setup() == []


@pytest.mark.parametrize(
    "removed",
    [["rest_framework.authtoken"], ["rest_framework", "rest_framework.authtoken"]],
)
def test_the_api_in_the_urls_needs_its_apps(settings, removed):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app not in removed]
    messages = check_site_setup()
    assert ids(messages) == ["django_modelslab.E060"]
    assert isinstance(messages[0], Error)
    for app in removed:
        assert repr(app) in messages[0].msg


@pytest.mark.urls("tests.urls_without_webhook")
def test_api_apps_are_not_needed_without_the_api(settings):
    settings.INSTALLED_APPS = [
        app for app in settings.INSTALLED_APPS if not app.startswith("rest_framework")
    ]
    assert check_site_setup() == []
