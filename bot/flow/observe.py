"""Observe: read every source once, assemble records, count errors into incidents.

A source that fails is reported once and retried every poll; a state database that refuses writes stops
the poll before any cursor moves, so the same lines are read again once it is writable.
"""

from __future__ import annotations

import asyncio
import logging

from bot import faults
from bot.errors import HealbotError, SourceError, StoreError
from bot.faults import Step
from bot.flow.context import LOGGER_NAME, Flow, ServiceRuntime
from bot.flow.storm import StormGate
from bot.interfaces import LogSource
from bot.models import Incident, SourceBatch
from bot.records import RecordAssembler
from bot.sources import expand_sources
from bot.store import Observation

log = logging.getLogger(LOGGER_NAME)

YIELD_EVERY_RECORDS = 256


class Observer:
    """Owns what observing needs between polls: one poll at a time, and whether the store is refusing."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow
        self._poll_lock = asyncio.Lock()
        self._store_problem: str | None = None
        self._storms = StormGate()

    async def poll(self) -> list[Incident]:
        """Read every source once; the incidents that errors were counted into."""
        touched: list[Incident] = []
        async with self._poll_lock:
            for runtime in self._flow.services.values():
                for source in expand_sources(runtime.sources):
                    try:
                        touched.extend(await self._poll_source(runtime, source))
                        runtime.source_errors.pop(source.source_id, None)
                    except SourceError as exc:
                        if runtime.source_errors.get(source.source_id) != str(exc):
                            log.warning("source %s: %s", source.source_id, exc)
                        runtime.source_errors[source.source_id] = str(exc)
                    except StoreError as exc:
                        await self._store_unwritable(str(exc))
                        return touched  # the cursors did not move: the same lines are read again later
            await self._store_writable()
        return touched

    async def _store_unwritable(self, problem: str) -> None:
        """The state database refused a write (a full disk): said once; detection retries every poll."""
        if self._store_problem is not None:
            return
        self._store_problem = problem
        log.error("%s", problem)
        await self._notify_best_effort(f"healbot cannot record new errors: {self._flow.scrub(problem)}")

    async def _store_writable(self) -> None:
        if self._store_problem is None:
            return
        self._store_problem = None
        log.warning("the state database is writable again")
        await self._notify_best_effort(
            "the state database is writable again: the errors logged meanwhile were read and counted"
        )

    async def _notify_best_effort(self, text: str) -> None:
        """A channel may need the store too (the Telegram outbox): a failure is logged, never raised."""
        try:
            await self._flow.channel.notify(text)
        except HealbotError as exc:
            log.error("could not send %r: %s", text[:80], exc)

    async def _poll_source(self, runtime: ServiceRuntime, source: LogSource) -> list[Incident]:
        flow = self._flow
        stored = flow.store.get_cursor(source.source_id)
        assembler = runtime.assemblers.setdefault(
            source.source_id, RecordAssembler(runtime.cfg.name, source.source_id)
        )
        cursor = assembler.read_cursor if assembler.read_cursor is not None else stored
        nothing_new = getattr(source, "nothing_new", None)
        if callable(nothing_new) and not assembler.has_pending and nothing_new(cursor):
            return []  # an idle source costs one stat on the loop, not a thread hop
        batch = await asyncio.to_thread(source.read, cursor)
        now = flow.clock.now()
        if batch.lines:
            records = assembler.feed(batch.lines, now, resume=batch.resume, read_from=cursor)
        else:
            records = assembler.flush()
        keep = _cursor_to_keep(assembler, batch)
        max_samples = flow.config.max_samples
        observations = []
        sampled: dict[str, int] = {}
        for done, record in enumerate(records, 1):
            if done % YIELD_EVERY_RECORDS == 0:
                await asyncio.sleep(0)  # a big batch of a flood leaves the loop to the timers in between
            fp = flow.grouper.fingerprint(record)
            if not fp.is_error:
                continue
            flow.ledger.record(runtime.cfg.name, fp.key, now)
            # Redaction is the costly step of a flood: only records that may become stored samples need it.
            sampled[fp.key] = sampled.get(fp.key, 0) + 1
            sample = flow.scrub(record.text) if sampled[fp.key] <= max_samples else ""
            observations.append(Observation(fp, sample, now))
        if not observations and keep == stored:
            assembler.read_cursor = batch.cursor
            return []
        service = runtime.cfg.name
        limits = flow.config.limits
        try:
            ingested = flow.store.ingest(
                source.source_id,
                keep,
                observations,
                max_samples=max_samples,
                at=now,
                max_new=self._storms.allowance(limits, service, now),
                overflow=self._storms.overflow(limits, service),
            )
        except StoreError:
            # Nothing of this batch is stored: forget what was assembled, read it all again from `stored`.
            runtime.assemblers.pop(source.source_id, None)
            raise
        assembler.read_cursor = batch.cursor
        await self._storms.counted(flow, service, ingested, now)
        if any(i.is_new for i in ingested):
            faults.hit(Step.INCIDENT_STORED)
        return [i.incident for i in ingested]


def _cursor_to_keep(assembler: RecordAssembler, batch: SourceBatch) -> str:
    """The cursor to persist: past the batch, unless a record is still pending; then at its first line,
    so that a crash before it is stored reads it again (and nothing stored before it twice).

    A source that cannot say where each line starts (`SourceBatch.resume` is None) resumes at the cursor
    the batch was read from: a crash then reads that batch again, so a record it completed may be counted
    twice, but none is lost. All built-in sources say where each line starts (the journal and PM2's JSON
    log type per entry: a record pending from the middle of an entry resumes at the whole entry).
    """
    if assembler.has_pending:
        resume = assembler.resume_cursor
        if resume is not None:
            return resume
    return batch.cursor
