"""Trigram indexes for prompt search, on PostgreSQL only.

``prompt__icontains`` (``regenerate_images --prompt-contains``, the admin's search box on
both changelists, the images' ``request__prompt``) is ``UPPER("prompt"::text) LIKE
UPPER('%…%')`` on PostgreSQL: no B-tree serves a pattern with a leading ``%``, so every
search read the whole table (about 0.5 s at 1,000,000 requests). A GIN index of
``pg_trgm``'s trigrams over the same expression ``UPPER(prompt)`` serves it (the ``::text``
cast of a text column is no cast at all, so the planner matches the expression), and
``ANALYZE`` (run here once the indexes exist) keeps statistics of the expression, which
tell the planner when a word is common enough to read the newest-first index and stop after
a page instead.
``negative_prompt`` gets one too: the admin's search ORs it with the prompt, and one
unindexed branch of an OR reads every row.

The indexes are not in the models' state (``Meta.indexes``): a trigram GIN index needs the
``pg_trgm`` extension and PostgreSQL's operator class, which other databases refuse, and a
model's indexes are created on every database the app runs on. So this migration creates
them with SQL on PostgreSQL and does nothing elsewhere; ``makemigrations`` never sees them
and has nothing to add or remove.

``CREATE EXTENSION IF NOT EXISTS pg_trgm`` needs the CREATE privilege on the database
(``pg_trgm`` is a trusted extension since PostgreSQL 13; before that, a superuser). Without
it the migration warns (log ``django_modelslab.migrations`` and stderr) with the statements
to run by hand, and goes on: search works as before, by reading the table.

On a large existing table ``CREATE INDEX`` blocks writes to it while it builds (about 10 s
per million requests); run it when the site is quiet, or create the indexes beforehand with
``CREATE INDEX CONCURRENTLY`` and the names below (``IF NOT EXISTS`` then skips them).
Reversing drops the indexes and keeps the extension (other code may use it).
"""

from __future__ import annotations

import logging
import sys

from django.db import DatabaseError, migrations, transaction

logger = logging.getLogger("django_modelslab.migrations")

TABLE = "django_modelslab_generationrequest"
#: index name -> column; each index is ``gin (UPPER(column) gin_trgm_ops)``.
TRIGRAM_INDEXES = {
    "modelslab_req_prompt_trgm": "prompt",
    "modelslab_req_negative_trgm": "negative_prompt",
}
CREATE_EXTENSION = "CREATE EXTENSION IF NOT EXISTS pg_trgm"


def create_index_sql(name: str, column: str) -> str:
    return (
        f'CREATE INDEX IF NOT EXISTS "{name}" ON "{TABLE}" '
        f'USING gin (UPPER("{column}") gin_trgm_ops)'
    )


def by_hand() -> str:
    statements = [CREATE_EXTENSION, *(create_index_sql(n, c) for n, c in TRIGRAM_INDEXES.items())]
    return ";\n".join(statements) + ";"


def has_trigrams(cursor) -> bool:
    cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'")
    return cursor.fetchone() is not None


def create_indexes(apps, schema_editor) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        if not has_trigrams(cursor):
            try:
                with transaction.atomic(using=connection.alias):  # a savepoint to fall back to
                    cursor.execute(CREATE_EXTENSION)
            except DatabaseError as exc:
                message = (
                    "django_modelslab 0012: could not create the PostgreSQL extension pg_trgm "
                    f"({str(exc).strip()}). Prompt search still works, by reading the whole "
                    "table. To make it fast, run as a user with the CREATE privilege on the "
                    "database (or a superuser):\n" + by_hand()
                )
                logger.warning(message)
                sys.stderr.write(f"\nWARNING: {message}\n")
                return
        for name, column in TRIGRAM_INDEXES.items():
            cursor.execute(create_index_sql(name, column))
        # The statistics of the indexed expressions (how common a word is) come with the
        # next ANALYZE; autovacuum would not run one for a new index.
        cursor.execute(f'ANALYZE "{TABLE}"')


def drop_indexes(apps, schema_editor) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for name in TRIGRAM_INDEXES:
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')


class Migration(migrations.Migration):
    dependencies = [
        ("django_modelslab", "0011_provider_slots"),
    ]

    operations = [
        migrations.RunPython(create_indexes, drop_indexes, elidable=False),
    ]
