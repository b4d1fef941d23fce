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
from bot.interfaces import LogSource
from bot.models import Incident
from bot.records import RecordAssembler
from bot.sources import expand_sources
from bot.store import Observation

log = logging.getLogger(LOGGER_NAME)


class Observer:
    """Owns what observing needs between polls: one poll at a time, and whether the store is refusing."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow
        self._poll_lock = asyncio.Lock()
        self._store_problem: str | None = None

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
        cursor = flow.store.get_cursor(source.source_id)
        assembler = runtime.assemblers.setdefault(
            source.source_id, RecordAssembler(runtime.cfg.name, source.source_id)
        )
        nothing_new = getattr(source, "nothing_new", None)
        if callable(nothing_new) and not assembler.has_pending and nothing_new(cursor):
            return []  # an idle source costs one stat on the loop, not a thread hop
        batch = await asyncio.to_thread(source.read, cursor)
        now = flow.clock.now()
        records = assembler.feed(batch.lines, now) if batch.lines else assembler.flush()
        max_samples = flow.config.max_samples
        observations = []
        sampled: dict[str, int] = {}
        for record in records:
            fp = flow.grouper.fingerprint(record)
            if not fp.is_error:
                continue
            flow.ledger.record(runtime.cfg.name, fp.key, now)
            # Redaction is the costly step of a flood: only records that may become stored samples need it.
            sampled[fp.key] = sampled.get(fp.key, 0) + 1
            sample = flow.scrub(record.text) if sampled[fp.key] <= max_samples else ""
            observations.append(Observation(fp, sample, now))
        if not observations and cursor == batch.cursor:
            return []
        ingested = flow.store.ingest(
            source.source_id, batch.cursor, observations, max_samples=max_samples, at=now
        )
        if any(i.is_new for i in ingested):
            faults.hit(Step.INCIDENT_STORED)
        return [i.incident for i in ingested]
