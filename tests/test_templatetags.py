"""``{% modelslab_image %}``: one <img> of stored renditions (1x, 2x when the original allows),
alt text, attributes escaped; a second render makes nothing and, prefetched, queries nothing."""

from __future__ import annotations

import re

import pytest
from django.template import Context, Template, TemplateSyntaxError

from django_modelslab.models import GeneratedImage, Rendition

from .helpers import new_request, png, stored_image

pytestmark = pytest.mark.django_db

PROMPT = "a tag test: <b>bold</b> otters & friends"


def render(source: str, **context) -> str:
    return Template("{% load modelslab %}" + source).render(Context(context))


def image_of(size: tuple[int, int], color: tuple[int, int, int]) -> GeneratedImage:
    image = stored_image(new_request(PROMPT), png(size, color))
    image.alt_text = 'Otters "holding" hands'
    image.save(update_fields=["alt_text"])
    return image


def attrs(html: str) -> dict[str, str]:
    assert html.startswith("<img") and html.count("<") == 1, html
    return dict(re.findall(r'([\w-]+)="([^"]*)"', html))


def test_the_tag_renders_src_srcset_size_alt_and_lazy_loading(media):
    image = image_of((1000, 800), (11, 22, 33))

    html = render('{% modelslab_image image "fill-400x300" %}', image=image)

    one = image.renditions.get(spec="fill-400x300")
    two = image.renditions.get(spec="fill-800x600")
    found = attrs(html)
    assert found["src"] == one.url
    assert found["srcset"] == f"{one.url} 1x, {two.url} 2x"
    assert (found["width"], found["height"]) == ("400", "300")
    assert (two.width, two.height) == (800, 600)
    assert found["alt"] == "Otters &quot;holding&quot; hands"
    assert (found["loading"], found["decoding"]) == ("lazy", "async")


def test_2x_is_dropped_or_reduced_when_the_original_is_small(media):
    small = image_of((400, 300), (44, 55, 66))
    middle = image_of((600, 450), (44, 55, 67))

    found = attrs(render('{% modelslab_image image "fill-400x300" %}', image=small))
    assert found["srcset"] == f"{small.renditions.get().url} 1x"
    assert Rendition.objects.filter(image=small).count() == 1  # no 2x made
    found = attrs(render('{% modelslab_image image "width-400" %}', image=middle))
    wide = middle.renditions.get(spec="width-800")
    assert (wide.width, wide.height) == (600, 450)  # never past the original
    assert found["srcset"].endswith(f"{wide.url} 1.5x")


def test_extra_attributes_pass_through_escaped_and_alt_can_be_given(media):
    image = image_of((200, 200), (77, 88, 99))

    html = render(
        '{% modelslab_image image "max-100x100" class="hero <x>" data-id=pk alt="" '
        'loading="eager" %}',
        image=image,
        pk=7,
    )

    found = attrs(html)
    assert found["class"] == "hero &lt;x&gt;"
    assert found["data-id"] == "7"
    assert found["alt"] == ""  # decorative: given, so the alt text is not used
    assert found["loading"] == "eager"


def test_the_as_form_gives_the_rendition_and_none_renders_nothing(media):
    image = image_of((300, 300), (100, 110, 120))

    html = render(
        '{% modelslab_image image "width-150" as img %}[{{ img.url }}|{{ img.width }}]{{ img }}',
        image=image,
    )

    url = image.renditions.get(spec="width-150").url
    assert html.startswith(f"[{url}|150]<img ")
    assert render('{% modelslab_image image "width-150" %}', image=None) == ""
    assert render('{% modelslab_image nothing "width-150" as img %}{{ img }}') == "None"


def test_bad_usage_is_a_clear_error(media):
    with pytest.raises(TemplateSyntaxError, match="takes an image and a spec"):
        render("{% modelslab_image image %}")
    with pytest.raises(TemplateSyntaxError, match="is not an attribute"):
        render('{% modelslab_image image "width-10" lazy %}')
    image = image_of((50, 50), (1, 1, 200))
    with pytest.raises(ValueError, match="unknown operation"):
        render('{% modelslab_image image "crop-10" %}', image=image)


def test_a_page_of_images_is_constant_queries_once_renditions_exist(
    media, django_assert_num_queries
):
    images = [image_of((500, 400), (120, 130, n)) for n in range(6)]
    page = "{% for image in images %}{% modelslab_image image 'fill-200x100' %}{% endfor %}"
    render(page, images=images)  # first render: made, 12 renditions
    made = Rendition.objects.count()
    assert made == 12

    for count in (2, 6):
        with django_assert_num_queries(2):  # the images, then all their renditions
            wanted = GeneratedImage.objects.filter(pk__in=[i.pk for i in images[:count]])
            listed = list(wanted.prefetch_renditions())
            html = render(page, images=listed)
        assert html.count("<img") == count
    assert Rendition.objects.count() == made


def test_a_second_render_makes_no_file_and_no_rendition(media, django_assert_max_num_queries):
    image = image_of((640, 480), (9, 8, 7))
    render('{% modelslab_image image "fill-320x240" %}', image=image)
    files = sorted(p for p in media.rglob("*") if p.is_file())

    fresh = GeneratedImage.objects.get(pk=image.pk)
    with django_assert_max_num_queries(2) as captured:  # 1x and 2x looked up, nothing made
        render('{% modelslab_image image "fill-320x240" %}', image=fresh)

    assert all(q["sql"].lstrip().upper().startswith("SELECT") for q in captured.captured_queries)
    assert sorted(p for p in media.rglob("*") if p.is_file()) == files
