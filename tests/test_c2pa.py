"""Content Credentials: generations, thumbnails and renditions stored with a signed C2PA
manifest (a throwaway CA and an ES256 leaf made here), read back with ``c2pa.Reader``."""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import c2pa
import pytest
from django.conf import settings as django_settings
from django.core.checks import Error

from django_modelslab import kinds
from django_modelslab.checks import check_settings
from django_modelslab.models import GeneratedImage, GenerationRequest
from django_modelslab.provenance import DIGITAL_SOURCE_TYPE

from .c2pa_identity import make_credentials
from .helpers import (
    configure,
    generate,
    new_kind_request,
    png,
    run_command,
    stored_image,
    submit_and_run,
    tiny_png,
)

pytestmark = pytest.mark.django_db

PROMPT = "a signed heron over a reed bed"
MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSION = {"png": "png", "jpeg": "jpg", "webp": "webp"}
# A test CA is on no trust list: the one failure a valid manifest shows.
UNTRUSTED = ["signingCredential.untrusted"]


@pytest.fixture(scope="session")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA's ES256 signing certificate, chain and key, and another key."""
    return make_credentials(tmp_path_factory.mktemp("c2pa"))


@pytest.fixture
def signing(settings, media, emulator, credentials) -> dict[str, Path]:
    configure(
        settings,
        C2PA={"CERT_CHAIN": str(credentials["chain"]), "PRIVATE_KEY": str(credentials["key"])},
    )
    return credentials


def read(data: bytes, mime: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The active manifest and the validation results of a file, read by the C2PA SDK."""
    with c2pa.Reader(mime or _mime(data), io.BytesIO(data)) as reader:
        return reader.get_active_manifest(), reader.get_validation_results()


def _mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    return "image/webp" if data[8:12] == b"WEBP" else "image/jpeg"


def stored(name: str) -> bytes:
    return (Path(django_settings.MEDIA_ROOT) / name).read_bytes()


def actions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    [assertion] = [a for a in manifest["assertions"] if a["label"].startswith("c2pa.actions")]
    return assertion["data"]["actions"]


def failures(results: dict[str, Any]) -> list[str]:
    return [item["code"] for item in results["activeManifest"]["failure"]]


def parent_of(manifest: dict[str, Any]) -> dict[str, Any]:
    [ingredient] = manifest["ingredients"]
    assert ingredient["relationship"] == "parentOf"
    return ingredient


def assert_named_by_its_hash(name: str, data: bytes) -> None:
    digest = hashlib.sha256(data).hexdigest()
    assert name.endswith(f"{digest[:2]}/{digest}.{name.rsplit('.', 1)[-1]}")


# --- generated images ----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_a_generated_image_is_stored_signed_under_the_hash_of_the_signed_bytes(
    signing, emulator, fmt: str
) -> None:
    emulator.configure(image_format=fmt)

    request = generate(PROMPT, seed=71, model_id="flux-pro")

    assert request.status == GenerationRequest.Status.SUCCEEDED, request.error
    image = request.images.get()
    data = stored(image.image.name)
    assert image.image.name.endswith(f".{EXTENSION[fmt]}")
    assert_named_by_its_hash(image.image.name, data)
    assert image.sha256 == hashlib.sha256(data).hexdigest() and image.bytes == len(data)
    manifest, results = read(data, MIME[fmt])
    [created] = actions(manifest)
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == DIGITAL_SOURCE_TYPE  # trainedAlgorithmicMedia
    assert created["softwareAgent"]["name"] == "ModelsLab flux-pro"
    assert "description" not in created  # the prompt stays out unless the setting allows it
    assert PROMPT.encode() not in data
    assert manifest["title"] == f"modelslab-{request.pk}.{EXTENSION[fmt]}"
    assert manifest["signature_info"]["common_name"] == "Test signer"
    assert failures(results) == UNTRUSTED  # valid, signed by a CA on no trust list
    # the thumbnail (WebP) is signed too: resized (and converted) from the original
    thumbnail = stored(image.thumbnail.name)
    assert_named_by_its_hash(image.thumbnail.name, thumbnail)
    derived, derived_results = read(thumbnail, "image/webp")
    names = [action["action"] for action in actions(derived)]
    converted = [] if fmt == "webp" else ["c2pa.converted"]
    assert names == ["c2pa.opened", "c2pa.resized", *converted]
    assert parent_of(derived)["active_manifest"] == manifest["label"]
    assert failures(derived_results) == UNTRUSTED


def test_the_prompt_is_in_the_manifest_only_when_the_setting_allows(settings, signing) -> None:
    configure(settings, C2PA={**settings.MODELSLAB["C2PA"], "INCLUDE_PROMPT": True})

    request = generate(PROMPT, seed=72)

    manifest, _ = read(stored(request.images.get().image.name))
    assert actions(manifest)[0]["description"] == PROMPT


def test_without_the_setting_nothing_is_signed(media, emulator) -> None:
    request = generate(PROMPT, seed=73)

    with pytest.raises(c2pa.C2paError):
        read(stored(request.images.get().image.name))


def test_an_img2img_result_records_its_signed_input_as_parent(signing) -> None:
    source = generate(PROMPT, seed=74).images.get()
    source_manifest, _ = read(stored(source.image.name))
    request = GenerationRequest(kind=kinds.Kind.IMG2IMG, prompt="the same, at dusk", seed=5)
    kinds.set_inputs(request, init_from=source)
    request.save()

    request = submit_and_run(request)

    assert request.status == GenerationRequest.Status.SUCCEEDED, request.error
    image = request.images.get()
    data = stored(image.image.name)
    assert_named_by_its_hash(image.image.name, data)
    manifest, results = read(data)
    opened, edited = actions(manifest)
    assert opened["action"] == "c2pa.opened"
    assert edited["action"] == "c2pa.edited"
    assert edited["digitalSourceType"] == DIGITAL_SOURCE_TYPE
    assert edited["softwareAgent"]["name"].startswith("ModelsLab ")
    parent = parent_of(manifest)
    assert parent["active_manifest"] == source_manifest["label"]  # the input's own manifest
    assert failures(results) == UNTRUSTED


def test_an_uploaded_input_without_a_manifest_is_still_the_parent(signing) -> None:
    request = submit_and_run(new_kind_request(kinds.Kind.UPSCALE, init=png((64, 48))))

    assert request.status == GenerationRequest.Status.SUCCEEDED, request.error
    manifest, _ = read(stored(request.images.get().image.name))
    parent = parent_of(manifest)
    assert "active_manifest" not in parent
    assert parent["title"] == request.init_image.name.rsplit("/", 1)[-1]


@pytest.mark.parametrize("spec", ["fill-64x48", "width-40|format-webp", "max-50x50|format-jpeg"])
def test_a_rendition_is_signed_with_the_original_as_ingredient(signing, spec: str) -> None:
    image = generate(PROMPT, seed=75).images.get()
    original, _ = read(stored(image.image.name))

    rendition = image.get_rendition(spec)

    data = stored(rendition.file.name)
    assert_named_by_its_hash(rendition.file.name, data)
    assert rendition.sha256 == hashlib.sha256(data).hexdigest()
    manifest, results = read(data)
    names = [action["action"] for action in actions(manifest)]
    converted = ["c2pa.converted"] if "format-" in spec else []
    assert names == ["c2pa.opened", "c2pa.resized", *converted]
    assert parent_of(manifest)["active_manifest"] == original["label"]
    assert failures(results) == UNTRUSTED


# --- the system checks ---------------------------------------------------------------------


def c2pa_errors(settings, **c2pa_setting: Any) -> list[tuple[str, str]]:
    configure(settings, C2PA=c2pa_setting)
    return [(m.id, m.msg) for m in check_settings() if isinstance(m, Error)]


def test_a_working_configuration_passes_the_checks(settings, credentials) -> None:
    chain, key = credentials["chain"], credentials["key"]
    assert c2pa_errors(settings, CERT_CHAIN=str(chain), PRIVATE_KEY=str(key)) == []
    # PEM text works as well as a path
    text = {"CERT_CHAIN": chain.read_text(), "PRIVATE_KEY": key.read_text()}
    assert c2pa_errors(settings, **text) == []


def test_a_broken_configuration_is_reported(settings, credentials, tmp_path) -> None:
    chain, key = str(credentials["chain"]), str(credentials["key"])
    [(code, message)] = c2pa_errors(settings, CERT_CHAIN=str(tmp_path / "no.pem"), PRIVATE_KEY=key)
    assert code == "django_modelslab.E081" and "CERT_CHAIN'] cannot be read" in message
    [(code, message)] = c2pa_errors(
        settings, CERT_CHAIN=chain, PRIVATE_KEY=str(credentials["other_key"])
    )
    assert code == "django_modelslab.E081"
    assert "is not the key of the first certificate" in message
    [(code, message)] = c2pa_errors(settings, CERT_CHAIN=chain, PRIVATE_KEY=key, ALGORITHM="es384")
    assert code == "django_modelslab.E081" and "'es384', which does not fit the key" in message
    [(code, message)] = c2pa_errors(settings, CERT_CHAIN=chain, PRIVATE_KEY=key, ALGORITHM="md5")
    assert code == "django_modelslab.E080" and "must be one of es256" in message
    [(code, message)] = c2pa_errors(settings, CERT_CHAIN=chain, PRIVATE_KEY=key, KEY="x")
    assert code == "django_modelslab.E080" and "unknown key(s) 'KEY'" in message
    [(code, message)] = c2pa_errors(settings, PRIVATE_KEY=key)
    assert code == "django_modelslab.E080" and "needs 'CERT_CHAIN'" in message
    # the private key never appears in a message
    assert all(credentials["key"].read_text()[40:80] not in m for _, m in c2pa_errors(
        settings, CERT_CHAIN=chain, PRIVATE_KEY=credentials["key"].read_text(), ALGORITHM="ps256"
    ))  # fmt: skip


def test_the_checks_say_when_the_extra_is_not_installed(settings, credentials, monkeypatch):
    monkeypatch.setitem(sys.modules, "c2pa", None)  # import c2pa -> ImportError

    [(code, message)] = c2pa_errors(
        settings, CERT_CHAIN=str(credentials["chain"]), PRIVATE_KEY=str(credentials["key"])
    )

    assert code == "django_modelslab.E081"
    assert "c2pa-python is not installed (pip install 'django-modelslab[c2pa]')" in message


# --- verify_images -------------------------------------------------------------------------


def test_verify_images_reports_a_tampered_and_an_unsigned_image(signing) -> None:
    good = generate(PROMPT, seed=76).images.get()
    tampered = generate(PROMPT, seed=77).images.get()
    path = Path(django_settings.MEDIA_ROOT) / tampered.image.name
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF  # a byte of the pixel data, after signing
    path.write_bytes(bytes(data))
    unsigned = stored_image(good.request, tiny_png(78), position=1)  # stored before signing

    out, error = run_command("verify_images")

    assert f"image {good.pk} " not in out
    assert f"{tampered.image.name}: corrupt" in out
    assert f"{tampered.image.name}: C2PA manifest no longer matches the bytes (" in out
    assert "assertion.dataHash.mismatch" in out
    assert f"image {unsigned.pk} (request {good.request_id}): {unsigned.image.name}: " in out
    assert f"{unsigned.image.name}: C2PA manifest missing" in out
    assert error is not None and "2 with problems" in error
    assert GeneratedImage.objects.count() == 3  # reports, never deletes


def test_verify_images_all_good_when_signed(signing) -> None:
    generate(PROMPT, seed=79)

    out, error = run_command("verify_images")

    assert error is None, out
    assert "1 OK, 0 with problems" in out
    assert json.dumps(out).count("C2PA") == 0
