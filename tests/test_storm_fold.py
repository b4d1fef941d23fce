"""A storming service's records are counted without grouping each one (issue 13, bot.flow.storm_fold): every
line is still counted exactly once, a known incident's records still count into it, another service's
error is still an incident of its own, storm samples are scrubbed, and folding keeps the storm going.

The pipeline world of tests/test_flood_limits.py: the real daemon objects, real log files read by cursor.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.flow import storm_fold
from bot.grouping import Grouper
from bot.models import LogRecord
from bot.records import RecordAssembler
from bot.sources.file import FileSource
from tests.bench.loghub import DATA_DIR
from tests.test_flood_limits import (
    LIMITS,
    FloodWorld,
    _own,
    _storms,
    distinct_errors,
    world_fixture,  # noqa: F401  (the fixture)
)

pytestmark = pytest.mark.real_cli

LOGHUB = DATA_DIR
STORM = 400  # distinct errors that start the storm: beyond the caps


async def _storming(world: FloodWorld) -> None:
    await world.log(world.flooded, distinct_errors(0, STORM))
    assert len(_storms(world.incidents("shop"))) == 1


async def test_a_storm_is_counted_exactly_with_most_records_not_grouped(
    world: FloodWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _storming(world)
    grouper = world.daemon.pipeline.grouper
    grouped = 0
    full = grouper.fingerprint

    def counting(record: LogRecord) -> object:
        nonlocal grouped
        grouped += 1
        return full(record)

    monkeypatch.setattr(grouper, "fingerprint", counting)
    lines = 3000
    await world.log(world.flooded, distinct_errors(10_000, lines) + "INFO shop all good\n" * 50)

    shop = world.incidents("shop")
    assert sum(i.count for i in shop) == STORM + lines  # every error line once; the INFO lines none
    assert len(_own(shop)) == LIMITS["new_incidents_per_service"]
    assert grouped < lines / 4  # most were told apart as errors only
    assert world.storm_messages() == 1


async def test_an_other_services_error_is_its_own_incident_while_a_service_storms(world: FloodWorld) -> None:
    await _storming(world)
    await world.log(world.other, "ERROR billing ledger locked by another writer\n")
    [billing] = world.incidents("billing")
    assert "ledger locked" in billing.title and billing.count == 1


async def test_a_known_incidents_records_count_into_it_while_the_service_storms(world: FloodWorld) -> None:
    await world.log(world.flooded, "ERROR payment gateway refused card 1234\n")
    [known] = world.incidents("shop")
    await _storming(world)
    # one record of the known kind early in the batch is grouped in full and learnt; the next ones of its
    # shape come after the batch's learning budget is spent, between records that are all new
    text = "ERROR payment gateway refused card 4321\n"
    for n in range(20):
        text += (
            distinct_errors(20_000 + 100 * n, 100)
            + f"ERROR payment gateway refused card {1111 * (n % 9 + 1)}\n"
        )
    await world.log(world.flooded, text)

    assert world.store.incident(known.id).count == 1 + 21
    assert sum(i.count for i in world.incidents("shop")) == 1 + STORM + 21 + 2000


async def test_storm_samples_are_scrubbed(world: FloodWorld) -> None:
    await _storming(world)
    secret = "hunter2-Zq8vXk3pLm9"
    lines = "".join(f"ERROR login failed password={secret}{n} {n}\n" for n in range(500))
    await world.log(world.flooded, lines)

    shop = world.incidents("shop")
    assert sum(i.count for i in shop) == STORM + 500
    for incident in shop:
        assert not any(secret in sample for sample in incident.samples)
        assert secret not in incident.title
    assert secret not in world.out.getvalue()


async def test_folding_without_the_store_keeps_the_storm_going(
    world: FloodWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _storming(world)
    monkeypatch.setattr(storm_fold, "LEARN_PER_BATCH", 0)  # nothing reaches the store's folding
    half = LIMITS["period_s"] / 2
    world.clock.offset += half  # the caps are still spent: folded without the store
    await world.log(world.flooded, distinct_errors(30_000, 50))
    world.clock.offset += half + 60  # the caps are free again, and new kinds beyond them are folded again:
    # a period after the storm began, but not after it last folded
    await world.log(world.flooded, distinct_errors(40_000, 50))

    shop = world.incidents("shop")
    assert sum(i.count for i in shop) == STORM + 100
    assert world.storm_messages() == 1  # one storm, announced once


@pytest.mark.skipif(not LOGHUB.is_dir(), reason="the loghub-2k sample sets are not here")
@pytest.mark.parametrize("path", sorted(LOGHUB.glob("*/*.log")), ids=lambda p: p.name)
def test_is_error_tells_what_grouping_calls_an_error(path: Path) -> None:
    grouper = Grouper.for_file(path)
    assembler = RecordAssembler("svc", f"file:{path}")
    records = assembler.feed(list(FileSource("svc", path).iter_lines()), 0.0) + assembler.flush()
    assert records
    for record in records:
        assert grouper.is_error(record) == grouper.fingerprint(record).is_error, record.text[:200]
