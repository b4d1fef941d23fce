"""Observe: read every source once, assemble records, count errors into incidents.

A source that fails is reported once and retried every poll; a state database that refuses writes stops
the poll before any cursor moves, so the same lines are read again once it is writable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from bot import faults
from bot.errors import HealbotError, SourceError, StoreError
from bot.faults import Step
from bot.fingerprint_memo import FingerprintMemo
from bot.flow.context import LOGGER_NAME, Flow, ServiceRuntime
from bot.flow.storm import StormGate
from bot.flow.storm_fold import StormFold
from bot.grepfilter import CANDIDATE_TEXT
from bot.interfaces import LogSource
from bot.models import Fingerprint, Incident, LogRecord, SourceBatch
from bot.records import RecordAssembler
from bot.sources import expand_sources
from bot.store import Observation

log = logging.getLogger(LOGGER_NAME)

CHUNK_LINES = 32  # lines of a source's first chunk; later ones are sized to take about CHUNK_S each
CHUNK_S = 0.005  # assembling and fingerprinting between two yields to the loop
MAX_CHUNK_LINES = 4096
POLL_BUDGET_S = 0.2  # per source and poll; a flood's rest is read by the next polls (the cursor says where)
BACKLOG_GAP_S = 0.02  # between a poll that left a backlog and the next one


class Observer:
    """Owns what observing needs between polls: one poll at a time, and whether the store is refusing."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow
        self._poll_lock = asyncio.Lock()
        self._store_problem: str | None = None
        self._storms = StormGate()
        self._backlog = False  # a source has more to read than the last poll's budget allowed
        self._follow_up_due = False
        self._queued: asyncio.Future[None] | None = None  # done when the poll waiting for the lock has run
        # The unprocessed rest of a batch cut by the poll budget, by source, with the cursor it starts
        # at: the next poll goes on with it instead of reading (and decoding) the same bytes again.
        self._rests: dict[str, tuple[str, SourceBatch]] = {}
        self.records_read: dict[str, int] = {}  # by source id, since start (for /metrics)
        self._fingerprints = FingerprintMemo(flow.grouper)
        self._fold = StormFold(flow.grouper, self._fingerprints)
        self._chunk_lines: dict[str, int] = {}  # by source: what the last chunk's cost says fits CHUNK_S

    async def poll(self) -> list[Incident]:
        """Read every source once; the incidents that errors were counted into. A poll asked for while
        another waits to begin waits for that one instead (it reads all this one would, and reports its
        incidents to its own caller): before, every write of a flood woke one more poll behind the lock,
        and the interval poll the heartbeat counts, or the one that reads another service's error, began
        only after a queue of seconds."""
        queued = self._queued
        if queued is not None:
            await asyncio.shield(queued)
            return []
        queued = self._queued = asyncio.get_running_loop().create_future()
        try:
            return await self._poll_when_free()
        finally:
            if self._queued is queued:
                self._queued = None  # cancelled before it began
            queued.set_result(None)

    async def _poll_when_free(self) -> list[Incident]:
        touched: list[Incident] = []
        async with self._poll_lock:
            self._queued = None  # begun: a poll asked for from now on must read after this one
            self._backlog = False
            for runtime in self._flow.services.values():
                for source in expand_sources(runtime.sources):
                    try:
                        touched.extend(await self._poll_source(runtime, source))
                        problem = runtime.source_errors.pop(source.source_id, None)
                        if problem is not None:  # a log file that appeared, a manager that came back
                            log.warning("source %s: readable again (it was: %s)", source.source_id, problem)
                    except SourceError as exc:
                        if runtime.source_errors.get(source.source_id) != str(exc):
                            log.warning("source %s: %s", source.source_id, exc)
                        runtime.source_errors[source.source_id] = str(exc)
                    except StoreError as exc:
                        await self._store_unwritable(str(exc))
                        return touched  # the cursors did not move: the same lines are read again later
            await self._store_writable()
            if self._backlog and not self._follow_up_due:
                self._follow_up_due = True
                self._flow.spawn(self._follow_up(), "poll-backlog")
        return touched

    async def _follow_up(self) -> None:
        """A poll left lines unread (its budget was spent): poll again soon, the loop free in between."""
        await asyncio.sleep(BACKLOG_GAP_S)
        self._follow_up_due = False
        await self._flow.poll_once()

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
        rest = self._rests.pop(source.source_id, None)
        if rest is not None and rest[0] == cursor:
            batch = rest[1]
        else:
            batch = await asyncio.to_thread(source.read, cursor)
        now = flow.clock.now()
        tally = _Tally(flow.config.max_samples, flow.scrub)
        self._fingerprints.clear()
        service = runtime.cfg.name
        limits = flow.config.limits
        allowance = self._storms.allowance(limits, service, now)
        fold = self._fold_for(service, allowance, now)
        if not batch.lines:
            self._observe(runtime, assembler.flush(), now, tally, fold)
            read_to = batch.cursor
        else:
            read_to, cut_at = await self._observe_batch(
                runtime, source.source_id, assembler, batch, cursor, now, tally, fold
            )
            if cut_at is not None:
                self._rests[source.source_id] = (read_to, _rest_of(batch, cut_at))
            elif callable(nothing_new) and not nothing_new(read_to):
                # A read stops at POLL_MAX_BYTES: the rest is read soon, not at the next interval.
                self._backlog = True
        observations = tally.observations(now)
        keep = _cursor_to_keep(assembler, read_to)
        if not observations and keep == stored:
            assembler.read_cursor = read_to
            return []
        try:
            ingested = flow.store.ingest(
                source.source_id,
                keep,
                observations,
                max_samples=flow.config.max_samples,
                at=now,
                max_new=allowance,
                overflow=self._storms.overflow(limits, service),
            )
        except StoreError:
            # Nothing of this batch is stored: forget what was assembled, read it all again from `stored`.
            runtime.assemblers.pop(source.source_id, None)
            self._rests.pop(source.source_id, None)
            raise
        assembler.read_cursor = read_to
        if fold is not None and fold.stormed:
            self._storms.folded(service, now)
        await self._storms.counted(flow, service, ingested, now)
        if any(i.is_new for i in ingested):
            faults.hit(Step.INCIDENT_STORED)
        return [i.incident for i in ingested]

    def _fold_for(self, service: str, allowance: int, now: float) -> StormFold | None:
        """The storm fold for a batch of `service`: while it storms and may open no incident."""
        limits = self._flow.config.limits
        if not self._storms.storming(limits, service, now):
            self._fold.storm_over(service)
            return None
        if allowance > 0 or not self._fold.trusted:
            return None
        self._fold.begin(service, self._storms.overflow(limits, service))
        return self._fold

    async def _observe_batch(
        self,
        runtime: ServiceRuntime,
        source_id: str,
        assembler: RecordAssembler,
        batch: SourceBatch,
        read_from: str | None,
        now: float,
        tally: _Tally,
        fold: StormFold | None,
    ) -> tuple[str, int | None]:
        """Assemble and fingerprint the batch chunk by chunk, yielding to the loop in between; once
        `POLL_BUDGET_S` is spent, the rest is left for the next poll. The cursor the next read starts at,
        and the index of the first line left (None when the whole batch was done)."""
        lines = batch.lines
        if batch.resume is None:  # it cannot be cut: all of it, now
            records = assembler.feed(lines, now, read_from=read_from)
            self._observe(runtime, records, now, tally, fold)
            return batch.cursor, None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + POLL_BUDGET_S
        start = 0
        size = self._chunk_lines.get(source_id, CHUNK_LINES)
        while True:
            end = chunk_end(batch, start + size)
            began = loop.time()
            records = assembler.feed(
                lines[start:end], now, resume=_shifted(batch.resume, start), read_from=read_from
            )
            self._observe(runtime, records, now, tally, fold)
            if end >= len(lines):
                return batch.cursor, None
            start = end
            size = self._chunk_lines[source_id] = _next_chunk_size(size, loop.time() - began)
            if loop.time() >= deadline:
                self._backlog = True
                return batch.resume(start), start  # a flood: the next poll goes on with the rest, soon
            await asyncio.sleep(0)  # a big batch leaves the loop to the timers between chunks

    def _observe(
        self,
        runtime: ServiceRuntime,
        records: list[LogRecord],
        now: float,
        tally: _Tally,
        fold: StormFold | None,
    ) -> None:
        if records:  # one call's records come from one source
            source = records[0].source
            self.records_read[source] = self.records_read.get(source, 0) + len(records)
        fingerprint = self._fingerprints.fingerprint if fold is None else fold.fingerprint
        may_be_error = CANDIDATE_TEXT.search  # the bulk scan's pre-filter: most lines are not grouped
        errors: dict[str, int] = {}  # by fingerprint key: the ledger gets one call per key, not per record
        for record in records:
            if may_be_error(record.text) is None:
                continue
            fp = fingerprint(record)
            if fp is not None and fp.is_error:
                errors[fp.key] = errors.get(fp.key, 0) + 1
                tally.add(fp, record.text)
        record_errors = self._flow.ledger.record
        service = runtime.cfg.name
        for key, count in errors.items():
            record_errors(service, key, now, count)


class _Tally:
    """A batch's error records counted by fingerprint, in the order each fingerprint first came, with the
    redacted texts of the first `max_samples` records of each: the store gets one observation per
    fingerprint. Samples are redacted as they come, so the cost is spread over the batch's chunks."""

    def __init__(self, max_samples: int, scrub: Callable[[str], str]) -> None:
        self._max_samples = max_samples
        self._scrub = scrub
        self._firsts: dict[str, tuple[Fingerprint, list[str]]] = {}
        self._counts: dict[str, int] = {}

    def add(self, fp: Fingerprint, text: str) -> None:
        key = fp.key
        count = self._counts.get(key)
        if count is None:
            self._counts[key] = 1
            self._firsts[key] = (fp, [self._scrub(text)])
            return
        self._counts[key] = count + 1
        if count < self._max_samples:  # redaction is the costly step of a flood: the few kept samples only
            self._firsts[key][1].append(self._scrub(text))

    def observations(self, now: float) -> list[Observation]:
        return [
            Observation(fp, samples[0], now, self._counts[key], tuple(samples[1:]))
            for key, (fp, samples) in self._firsts.items()
        ]


@dataclass(frozen=True, slots=True)
class _Shifted:
    """`SourceBatch.resume` for a chunk of the batch that starts at line `start`."""

    resume: Callable[[int], str]
    start: int

    def __call__(self, index: int) -> str:
        return self.resume(self.start + index)


def _shifted(resume: Callable[[int], str], start: int) -> _Shifted:
    """`resume` for the lines from `start` on; a shifted one is shifted further, not wrapped: a flood cut
    over many polls nested one call per cut (hundreds for each line's cursor)."""
    if isinstance(resume, _Shifted):
        return _Shifted(resume.resume, resume.start + start)
    return _Shifted(resume, start)


def _next_chunk_size(size: int, took_s: float) -> int:
    """Cheap lines (a flood of one message) go in big chunks, costly ones (each a new kind of error, to be
    clustered) in small ones, so the loop waits about CHUNK_S whatever the lines cost."""
    if took_s < CHUNK_S / 2:
        return min(MAX_CHUNK_LINES, size * 2)
    if took_s > CHUNK_S:
        return max(1, size // 2)
    return size


def _rest_of(batch: SourceBatch, start: int) -> SourceBatch:
    """The lines of `batch` from `start` on, resuming as the batch does."""
    assert batch.resume is not None
    return SourceBatch(lines=batch.lines[start:], cursor=batch.cursor, resume=_shifted(batch.resume, start))


def chunk_end(batch: SourceBatch, wanted: int) -> int:
    """The first line index from `wanted` on where a read may resume without repeating a line: several
    lines of one journal entry or PM2 JSON entry share their resume cursor, so a chunk never splits one."""
    lines, resume = batch.lines, batch.resume
    if wanted >= len(lines) or resume is None:
        return len(lines)
    end = wanted
    before = resume(end - 1)
    while end < len(lines) and resume(end) == before:
        end += 1
    return end


def _cursor_to_keep(assembler: RecordAssembler, read_to: str) -> str:
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
    return read_to
