"""Room on each page for in-place (HOT) updates of the rows ingestion adds to with every batch.

Every batch updates the current minute's, hour's and day's rollup rows of each project × key × model
it touches, and the pending charge of each of its statement lines. At PostgreSQL's default
fillfactor (100) the page of a row just inserted is full, so almost no update could stay on it
(0.3 % of rollup updates were HOT in bench/fleet_http.py's runs): each one wrote a new entry into
every index too. With half of each rollup page and four fifths of each pending-charge page kept
free, half of the rollup updates and four fifths of the pending-charge ones are HOT, and
PostgreSQL's CPU per 1,000-event batch falls by about a third (bench/README.md, "HOT updates").
The cost is space: rollup pages hold half the rows. Pages written before this migration keep their
rows until they are rewritten (VACUUM FULL or pg_repack); new pages follow the setting.
"""

from django.db import migrations

SETTINGS = {"usage_usagerollup": 50, "usage_pendingcharge": 20}


def set_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return  # SQLite has no fillfactor
    for table, percent in SETTINGS.items():
        schema_editor.execute(f"ALTER TABLE {table} SET (fillfactor = {percent})")


def reset_fillfactor(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in SETTINGS:
        schema_editor.execute(f"ALTER TABLE {table} RESET (fillfactor)")


class Migration(migrations.Migration):
    dependencies = [("usage", "0008_usage_peaks")]

    operations = [migrations.RunPython(set_fillfactor, reset_fillfactor, elidable=False)]
