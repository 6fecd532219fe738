"""The images endpoint: alt_text (read, and PATCH), ``?rendition=`` URLs, bad specs 400."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from django_modelslab.models import Rendition

from .helpers import api_client, api_url, new_request, png, stored_image

pytestmark = pytest.mark.django_db


def owned_image(owner, color):
    image = stored_image(
        new_request("api renditions: a quiet harbour", requested_by=owner), png((600, 400), color)
    )
    image.alt_text = "A quiet harbour"
    image.save(update_fields=["alt_text"])
    return image


def test_an_image_carries_alt_text_and_the_rendition_asked_for(owner, media):
    image = owned_image(owner, (3, 60, 90))
    client = api_client(owner)

    plain = client.get(api_url("image-detail", image.pk)).json()
    response = client.get(
        api_url("image-detail", image.pk), {"rendition": "fill-300x200|format-webp"}
    )

    assert plain["alt_text"] == "A quiet harbour" and plain["rendition"] is None
    body = response.json()
    rendition = Rendition.objects.get(image=image, spec="fill-300x200|format-webp")
    assert body["rendition"] == {
        "url": f"http://testserver{rendition.file.url}",
        "width": 300,
        "height": 200,
        "format": "WEBP",
    }


def test_lists_carry_renditions_in_constant_queries(owner, media):
    for n in range(3):
        owned_image(owner, (4, 61, 90 + n))
    client = api_client(owner)
    client.get(api_url("image-list"), {"rendition": "width-120"})  # made
    assert Rendition.objects.count() == 3

    with CaptureQueriesContext(connection) as three:
        response = client.get(api_url("image-list"), {"rendition": "width-120"})
    for n in range(3):
        owned_image(owner, (5, 62, 90 + n))
    client.get(api_url("image-list"), {"rendition": "width-120"})
    with CaptureQueriesContext(connection) as six:
        again = client.get(api_url("image-list"), {"rendition": "width-120"})

    assert len(six.captured_queries) == len(three.captured_queries) <= 6

    assert [i["rendition"]["width"] for i in response.json()["results"]] == [120] * 3
    assert len(again.json()["results"]) == 6


@pytest.mark.parametrize("where", ["image-list", "image-detail"])
def test_a_bad_spec_is_a_400_that_says_why(owner, media, where):
    image = owned_image(owner, (6, 63, 91))
    args = (image.pk,) if where == "image-detail" else ()

    response = api_client(owner).get(api_url(where, *args), {"rendition": "fill-400"})

    assert response.status_code == 400
    [message] = response.json()["rendition"]
    assert "fill takes fill-WxH" in message
    assert not Rendition.objects.exists()


def test_patch_changes_only_alt_text_cleaned(owner, media):
    image = owned_image(owner, (7, 64, 92))
    client = api_client(owner)
    url = api_url("image-detail", image.pk)

    response = client.patch(url, {"alt_text": "  Boats\n at   anchor\x07 "}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["alt_text"] == "Boats at anchor"
    image.refresh_from_db()
    assert image.alt_text == "Boats at anchor"

    refused = client.patch(url, {"alt_text": "x", "width": 1}, format="json")
    assert refused.status_code == 400 and "width" in refused.json()
    too_long = client.patch(url, {"alt_text": "x" * 501}, format="json")
    assert too_long.status_code == 400 and "alt_text" in too_long.json()
    assert client.put(url, {"alt_text": "x"}, format="json").status_code == 405
    image.refresh_from_db()
    assert (image.alt_text, image.width) == ("Boats at anchor", 600)
