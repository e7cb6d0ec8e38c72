"""The backup Job's stream row counter against real pg_dump output of a awkward schema.

The counts in a plain backup's manifest come from the dump stream (``RowCounter`` in the
Job's helper), not from ``count(*)``: here they must equal ``count(*)`` of every table for
names pg_dump has to quote, values with newlines, tabs and backslashes, a lone ``\\.``
value, a table without columns, an empty table, partitions and a function whose body has a
line beginning with ``COPY``.
"""

from __future__ import annotations

import gzip
import subprocess
from collections.abc import Iterator

import pytest

from stronghold_operator.builders.backup_program import program_files
from stronghold_operator.builders.jobs import stronghold_job as helper
from tests.integration import health_kit as hk

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SCHEMA = r"""
CREATE SCHEMA "Ledger.2026";
CREATE TABLE "Ledger.2026"."Entries ""big"" one"(id bigserial PRIMARY KEY, note text);
INSERT INTO "Ledger.2026"."Entries ""big"" one"(note)
  SELECT CASE g % 5 WHEN 0 THEN E'two\nlines' WHEN 1 THEN E'tab\there' WHEN 2 THEN '\.'
                    WHEN 3 THEN E'back\\slash\n\\.\n' ELSE NULL END
  FROM generate_series(1, 25000) g;
CREATE TABLE public.accounts(id int PRIMARY KEY, name text);
INSERT INTO public.accounts SELECT g, 'name ' || g FROM generate_series(1, 1234) g;
CREATE TABLE public.empty_t(x int);
CREATE TABLE public.nocols();
INSERT INTO public.nocols DEFAULT VALUES;
INSERT INTO public.nocols DEFAULT VALUES;
CREATE TABLE public.measure(at date, v int) PARTITION BY RANGE (at);
CREATE TABLE public.measure_2026 PARTITION OF public.measure
  FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE public.measure_2027 PARTITION OF public.measure
  FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
INSERT INTO public.measure SELECT date '2026-06-01' + (g % 400), g FROM generate_series(1, 900) g;
CREATE FUNCTION public.f() RETURNS void LANGUAGE sql AS $$
COPY public.accounts TO stdout;
$$;
"""


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with hk.scratch_database("rowcount", SCHEMA) as db:
        yield db


def sql_counts(db: str) -> dict[str, int]:
    """``count(*)`` of every table, with the query the Job uses for custom dumps."""
    out = subprocess.run(
        ["psql", "-X", "-h", "127.0.0.1", "-U", "postgres", "-d", db, "-qAt"],
        input=program_files()["count-rows.sql"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {k: int(v) for k, _, v in (line.rpartition("|") for line in out.splitlines())}


def test_stream_counts_equal_count_star_for_real_pg_dump_output(database: str) -> None:
    dump = subprocess.run(
        ["pg_dump", "-h", "127.0.0.1", "-U", "postgres", database],
        capture_output=True,
        check=True,
    ).stdout
    rows = helper.RowCounter()
    reader = helper.Reader(True, rows)
    archive = gzip.compress(dump)
    for i in range(0, len(archive), 65536):
        reader.feed(archive[i : i + 65536])
    assert reader.finish() is None
    assert rows.bad == [] and rows.table is None
    expected = sql_counts(database)
    assert expected['Ledger.2026.Entries "big" one'] == 25000
    assert expected["public.nocols"] == 2 and expected["public.empty_t"] == 0
    assert rows.counts == expected
