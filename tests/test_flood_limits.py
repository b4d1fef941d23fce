"""A flood of distinct errors stays bounded (issue 11 item 5): at most the `[limits]` caps of new incidents
and of diagnoses per period, every line still counted (the rest in one "error storm" incident per service,
announced once), and an unrelated error of another service still gets its own incident.

The pipeline world: the real daemon objects, the console channel, the real claude binary against the fake
Messages API, real log files read by cursor.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bot import policy
from bot.config import load_config
from bot.daemon import Daemon
from bot.demo.fake_messages_api import FakeMessagesApi
from bot.errors import ConfigError
from bot.flow import observe
from bot.models import Incident
from bot.records import RecordAssembler
from bot.sources.file import POLL_MAX_BYTES, FileCursor
from bot.store import Observation, Store
from tests.fakes.world import (
    DEFAULT_ANSWER,
    ShiftedClock,
    console_daemon,
    fake_api_runner,
    healbot_toml,
    in_process_claude,
    scratch_service,
    toml_table,
)

pytestmark = pytest.mark.real_cli

LIMITS = {
    "period_s": 600,
    "new_incidents_per_service": 5,
    "new_incidents": 8,
    "diagnoses_per_service": 2,
    "diagnoses": 3,
}
STORM_NOTE = "errors of new kinds were counted here"
LETTERS = "bcdfghjklmnpqrstvwxz"


def word(n: int) -> str:
    """A word of letters only (digits are masked when grouping): distinct for distinct n."""
    letters = []
    for _ in range(5):
        n, digit = divmod(n, len(LETTERS))
        letters.append(LETTERS[digit])
    return "".join(letters)


def distinct_errors(first: int, count: int) -> str:
    """`count` error lines that share no word: each one a kind of its own for the template clusters."""
    return "".join(f"ERROR {' '.join(word((first + i) * 8 + k) for k in range(6))}\n" for i in range(count))


@dataclass
class FloodWorld:
    daemon: Daemon
    out: io.StringIO
    clock: ShiftedClock
    flooded: Path
    other: Path
    fake: FakeMessagesApi

    @property
    def store(self) -> Store:
        return self.daemon.store

    async def log(self, path: Path, text: str) -> None:
        with path.open("a") as handle:
            handle.write(text)
        for _ in range(50):  # each poll reads at most POLL_MAX_BYTES per source
            await self.daemon.pipeline.poll_once()
            if all(self._read_to_the_end(p) for p in (self.flooded, self.other)):
                break
        await self.daemon.pipeline.poll_once()  # a quiet poll flushes the last record
        await self.daemon.pipeline.wait_idle()

    def _read_to_the_end(self, path: Path) -> bool:
        cursor = self.store.get_cursor(f"file:{path}")
        return cursor is not None and f'"offset": {path.stat().st_size}' in cursor

    def incidents(self, service: str) -> list[Incident]:
        return self.store.incidents(service=service, limit=10_000)

    def storm_messages(self) -> int:
        return self.out.getvalue().count(STORM_NOTE)


@pytest.fixture(name="world")
async def world_fixture(tmp_path: Path) -> Iterator[FloodWorld]:
    service = scratch_service(tmp_path, name="shop")
    other = tmp_path / "billing.log"
    other.write_text("starting\n")
    text = healbot_toml(
        service.state_dir,
        service.repo,
        [service.log],
        service="shop",
        healbot={"poll_interval_s": 0.1},
        claude=in_process_claude(idle_timeout_s=20),
        tables={"limits": LIMITS},
    )
    text += toml_table("services.billing", {"repo": service.repo, "logs": [other]})
    text += toml_table("services.billing.manager", {"type": "command", "restart": ["true"]})
    service.config_path.write_text(text)
    config = load_config(service.config_path)
    fake = FakeMessagesApi(structured=DEFAULT_ANSWER).start()
    runner = fake_api_runner(config, fake.url, tmp_path / "claude")
    out, clock = io.StringIO(), ShiftedClock()
    daemon = await console_daemon(config, runner, out, clock)
    await daemon.pipeline.poll_once()  # first run: the cursors at the end
    try:
        yield FloodWorld(daemon, out, clock, service.log, other, fake)
    finally:
        await daemon.pipeline.cancel_all()
        fake.stop()
        daemon.store.close()


def _own(incidents: list[Incident]) -> list[Incident]:
    return [i for i in incidents if not policy.is_storm(i.fingerprint)]


def _storms(incidents: list[Incident]) -> list[Incident]:
    return [i for i in incidents if policy.is_storm(i.fingerprint)]


@pytest.mark.parametrize("flood", [40, 400])
async def test_high_cardinality_flood_opens_bounded_incidents(world: FloodWorld, flood: int) -> None:
    await world.log(world.flooded, distinct_errors(0, flood))

    shop = world.incidents("shop")
    assert len(_own(shop)) == LIMITS["new_incidents_per_service"]
    [storm] = _storms(shop)
    assert sum(i.count for i in shop) == flood  # every line counted
    assert storm.count == flood - LIMITS["new_incidents_per_service"]
    assert world.storm_messages() == 1
    diagnosed = [i for i in shop if i.last_diagnosed_at is not None]
    assert len(diagnosed) <= LIMITS["diagnoses_per_service"]
    assert storm not in diagnosed
    assert world.daemon.pipeline.queued_diagnoses() == 0

    # the storm goes on: still one message, still one storm incident, every line counted
    await world.log(world.flooded, distinct_errors(flood, flood))
    shop = world.incidents("shop")
    assert len(_own(shop)) == LIMITS["new_incidents_per_service"]
    assert len(_storms(shop)) == 1
    assert sum(i.count for i in shop) == 2 * flood
    assert world.storm_messages() == 1

    # an unrelated error in another service gets an incident of its own, and a diagnosis
    await world.log(world.other, "ERROR billing ledger locked by another writer\n")
    [billing] = world.incidents("billing")
    assert not policy.is_storm(billing.fingerprint)
    assert "ledger locked" in billing.title
    assert billing.last_diagnosed_at is not None
    everything = world.incidents("shop") + world.incidents("billing")
    assert len(_own(everything)) <= LIMITS["new_incidents"]
    assert len([i for i in everything if i.last_diagnosed_at is not None]) <= LIMITS["diagnoses"]

    # a period later the storm is over: a new kind of error opens its own incident again
    world.clock.offset += LIMITS["period_s"] + 1
    await world.log(world.flooded, distinct_errors(10 * flood, 1))
    assert len(_own(world.incidents("shop"))) == LIMITS["new_incidents_per_service"] + 1
    assert world.storm_messages() == 1


@pytest.mark.parametrize(
    ("limits", "key"),
    [
        ({"new_incidents_per_service": 0}, "limits.new_incidents_per_service"),
        ({"diagnoses": -1}, "limits.diagnoses"),
        ({"period_s": 0}, "limits.period_s"),
        ({"new_incidents_per_service": 60, "new_incidents": 50}, "limits.new_incidents_per_service"),
        ({"diagnoses_per_service": 11}, "limits.diagnoses_per_service"),
        ({"new_incidents": "many"}, "limits.new_incidents"),
        ({"new_incidents": True}, "limits.new_incidents"),
        ({"burst": 3}, "limits"),
    ],
)
def test_bad_limits_are_refused_naming_the_key(tmp_path: Path, limits: dict[str, object], key: str) -> None:
    service = scratch_service(tmp_path)
    path = service.write_config(tables={"limits": limits})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert key in str(caught.value)


async def test_a_batch_cut_by_the_poll_budget_was_read_again_from_disk(
    world: FloodWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: after a poll spent its budget, the next poll read (and decoded) the whole rest of the
    file again to process one more chunk; a 1 M-line flood went at half the speed. The rest of the batch
    is kept: one read serves every poll until it is done, and every line is still counted once."""
    monkeypatch.setattr(observe, "POLL_BUDGET_S", 0.0)  # one chunk per poll
    [runtime] = [r for r in world.daemon.pipeline.services.values() if r.cfg.name == "shop"]
    [source] = [s for s in runtime.sources if s.source_id == f"file:{world.flooded}"]
    reads: list[str | None] = []
    real_read = source.read

    def counting_read(cursor: str | None, *args: object, **kwargs: object) -> object:
        reads.append(cursor)
        return real_read(cursor, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(source, "read", counting_read)
    lines = 20 * observe.CHUNK_LINES
    await world.log(world.flooded, "ERROR the same flood line\n" * lines)
    [incident] = _own(world.incidents("shop"))
    assert incident.count == lines
    assert len(reads) <= 3, len(reads)  # the first read, and the quiet polls after it


async def test_a_batch_of_identical_errors_is_one_store_write_with_its_count(
    world: FloodWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: each record of a flood was one SELECT and one UPDATE; a batch now reaches the store
    tallied, one observation per fingerprint with its count and a few samples."""
    writes: list[list[tuple[str, int]]] = []
    real_ingest = world.store.ingest

    def spying_ingest(source_id: str, cursor: str, observations: list[Observation], **kw: Any) -> Any:
        writes.append([(o.fingerprint.key, o.count) for o in observations])
        return real_ingest(source_id, cursor, observations, **kw)

    monkeypatch.setattr(world.store, "ingest", spying_ingest)
    lines = 500
    await world.log(world.flooded, "".join(f"ERROR upstream timed out after {n} ms\n" for n in range(lines)))
    [incident] = _own(world.incidents("shop"))
    assert incident.count == lines
    assert len(incident.samples) == world.daemon.config.max_samples
    counted = [entry for write in writes for entry in write]
    assert sum(count for _, count in counted) == lines
    assert len(counted) <= 2, counted  # the batch, and the record a quiet poll flushed


async def test_a_different_error_mid_flood_is_stored_by_the_poll_that_reads_it(
    world: FloodWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: the poll that reads a line commits it with the cursor past it: once the stored cursor is
    past the different error, its incident exists (one chunk per poll, so the flood takes many polls)."""
    monkeypatch.setattr(observe, "POLL_BUDGET_S", 0.0)
    monkeypatch.setattr(observe, "CHUNK_LINES", 64)
    flood = "".join(f"ERROR upstream timed out after {n} ms\n" for n in range(640))
    with world.flooded.open("a") as handle:
        handle.write(flood)
        mid = handle.tell()
        handle.write("ERROR disk quota of the spool exceeded\n" + flood)
    source_id = f"file:{world.flooded}"
    for _ in range(100):
        await world.daemon.pipeline.poll_once()
        cursor = world.store.get_cursor(source_id)
        assert cursor is not None
        titles = [i.title for i in world.incidents("shop")]
        if FileCursor.load(cursor).offset > mid:
            assert any("disk quota" in t for t in titles), titles
            break
        assert not any("disk quota" in t for t in titles)
    else:
        pytest.fail("the flood was not read past the different error")


async def test_a_flood_longer_than_one_read_is_read_on_without_waiting_for_the_next_poll(
    world: FloodWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 13): a batch done within the poll budget scheduled no follow-up poll even when
    its read had stopped at POLL_MAX_BYTES, so after a flood's last write the rest was read 1 MB per poll
    interval (the 1 M-line flood: 12 k lines/s). Now the poll that leaves unread bytes asks for the next."""
    monkeypatch.setattr(observe, "POLL_BUDGET_S", 60.0)  # every batch is done within its poll
    line = "ERROR upstream timed out after {n} ms\n"
    lines = 3 * POLL_MAX_BYTES // len(line.format(n=100000))
    with world.flooded.open("a") as handle:
        handle.write("".join(line.format(n=100000 + n) for n in range(lines)))
    await world.daemon.pipeline.poll_once()  # the only poll asked for; follow-ups come on their own

    def counted() -> int:
        return sum(i.count for i in _own(world.incidents("shop")))

    deadline = asyncio.get_running_loop().time() + 30
    while counted() < lines - 1 and asyncio.get_running_loop().time() < deadline:  # the last one pends
        await asyncio.sleep(0.02)
    assert counted() >= lines - 1


async def test_costly_records_are_fed_in_small_chunks_from_the_start_of_the_next_poll(
    world: FloodWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 13): each batch began with a fixed chunk of lines; when every record was costly
    to group (a flood of new kinds, each matched against many clusters) that first chunk held the loop
    for seconds (heartbeat gaps of 14 s). A source's chunk size now follows what its last chunk cost.
    Every record is costly whichever way it is counted: grouped in full, or only told apart as an error
    while the service storms (bot.flow.storm_fold)."""
    grouper = world.daemon.pipeline.grouper

    def costly(real: Any) -> Any:
        def slow(record: Any) -> Any:
            time.sleep(0.002)  # stands for cluster matching that takes this long per record
            return real(record)

        return slow

    monkeypatch.setattr(grouper, "fingerprint", costly(grouper.fingerprint))
    monkeypatch.setattr(grouper, "is_error", costly(grouper.is_error))
    fed: list[int] = []
    real_feed = RecordAssembler.feed

    def counting_feed(self: RecordAssembler, lines: Any, *args: Any, **kwargs: Any) -> Any:
        lines = list(lines)
        fed.append(len(lines))
        return real_feed(self, lines, *args, **kwargs)

    monkeypatch.setattr(RecordAssembler, "feed", counting_feed)
    await world.log(world.flooded, distinct_errors(0, 200))
    fed.clear()
    with world.flooded.open("a") as handle:
        handle.write(distinct_errors(200, 200))
    await world.daemon.pipeline.poll_once()
    assert fed and fed[0] < observe.CHUNK_LINES, fed


async def test_polls_asked_for_while_one_waits_to_begin_are_served_by_it(
    world: FloodWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (issue 13): each write of a flood woke one more poll, and each waited behind the lock
    for all the polls before it: the interval poll the heartbeat counts (6 s without a ping) and the one
    that read another service's error (an incident after 5 s) began only after seconds of queue. A poll
    asked for while another waits to begin waits for that one, which reads everything it would."""
    observer = world.daemon.pipeline._observer
    polled: list[str] = []
    poll_source = observer._poll_source

    async def counting(runtime: Any, source: Any) -> list[Incident]:
        polled.append(source.source_id)
        return await poll_source(runtime, source)

    monkeypatch.setattr(observer, "_poll_source", counting)
    await world.daemon.pipeline.poll_once()
    sources = len(polled)
    with world.other.open("a") as out:
        out.write("ERROR billing ledger locked while polls queue\n")
    async with observer._poll_lock:  # a poll runs
        asked = [asyncio.create_task(world.daemon.pipeline.poll_once()) for _ in range(6)]
        for _ in range(len(asked) + 1):
            await asyncio.sleep(0)  # every task gets to ask (and the first to wait for the lock)
    await asyncio.gather(*asked)
    assert len(polled) == 2 * sources  # one poll served the six
    await world.daemon.pipeline.poll_once()  # a quiet poll flushes the pending record
    [billing] = world.incidents("billing")
    assert "while polls queue" in billing.title
    assert len(polled) == 3 * sources
