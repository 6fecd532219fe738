"""tests/wagtail/: Wagtail's initial tree for every database test.

Wagtail's migrations create the default locale, the root collection, the root page, a home
page and the default site; a transactional test's flush deletes them (permissions and content
types come back with ``post_migrate``, these do not), so each database test gets them back.
"""

from __future__ import annotations

import pytest


def ensure_initial_tree() -> None:
    """What Wagtail's migrations create: a locale, the root collection, the page tree, a site."""
    from wagtail.models import Collection, Locale, Page, Site

    if not Locale.objects.exists():
        Locale.objects.create(language_code="en")
    if not Collection.objects.exists():
        Collection.add_root(name="Root")
    if not Page.objects.exists():
        root = Page.add_root(instance=Page(title="Root", slug="root"))
        home = root.add_child(instance=Page(title="Welcome to your new Wagtail site!", slug="home"))
        Site.objects.create(hostname="localhost", port=80, root_page=home, is_default_site=True)


@pytest.fixture(autouse=True)
def wagtail_initial_tree(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("django_db") is not None:
        request.getfixturevalue("db")
        ensure_initial_tree()
