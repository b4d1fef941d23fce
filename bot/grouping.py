"""Fingerprints (what makes two records the same problem) and `healbot scan`, the dry run over a file.

Key of a stack trace: service + innermost exception type + the innermost three frames as
`file basename:function`, never line numbers, so a fix that shifts lines keeps the key and one fault
logged with different ids or messages stays one incident. Key of any other record: service + its masked
template (header stripped, tokens masked, see bot.masking; the header of a file is learned from its first
lines, bot.header_infer; a JSON or logfmt line, also after a prefix, is grouped by its message field and
the names of its other fields, bot.structured).

What counts as an error:
- a stack trace (Python or Java), except a Python traceback whose final exception is a bare
  `KeyboardInterrupt` or `SystemExit`: that is a process being stopped, not a fault. PM2 stops and
  restarts Python apps with SIGINT, so each `pm2 restart` writes such a traceback to the error log;
- a line whose level word is ERROR or worse (ERR, SEVERE, CRITICAL, CRIT, FATAL, ALERT, EMERG, PANIC); the
  level is the one in its file's learned level column (also `E`, `[error]`), or the level field of a JSON
  or logfmt line, when there is one;
- an access-log line with an HTTP 5xx status (the service failed a request; some services answer 500
  without logging anything else). Its template is `HTTP <status> <method> <route>`, ids in the route
  masked, so each failing endpoint is its own group;
- a line without a level word that names an exception class (`…Error`, `…Exception`), a Go `panic:`,
  starts with `error:`/`fatal:`, or holds an upper-case ERROR/FATAL/CRITICAL/SEVERE.
A level word below ERROR (INFO, WARN, …) makes a single line a non-error, whatever its text says.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Protocol

from bot import fastscan
from bot.clusters import (
    DEFAULT_DEPTH,
    DEFAULT_MAX_CLUSTERS,
    DEFAULT_MERGE_AFTER,
    DEFAULT_SETTLED_AFTER,
    DEFAULT_SETTLED_WORDS_AFTER,
    DEFAULT_SIMILARITY,
    FIELD_NAMES,
    TOUCH_INTERVAL_S,
    Cluster,
    SavedCluster,
    TemplateClusters,
)
from bot.errors import StoreError
from bot.header_infer import DEFAULT_MAX_GAP, DEFAULT_SHARE, SAMPLE_LINES, HeaderModel, head_lines
from bot.header_infer import learn as learn_header
from bot.masking import ERROR_SEVERITY, LEVELS, Header, mask, strip_after_level, strip_header, strip_leading
from bot.record_types import Fingerprint, Frame, LogLine, LogRecord
from bot.records import (
    JAVA_CAUSE,
    JAVA_EXCEPTION_LINE,
    PY_CHAIN,
    PY_TRACEBACK,
    RecordAssembler,
    strip_line_prefix,
)
from bot.redact import redacted
from bot.stable_hash import sha256_hex
from bot.structured import structured_in
from bot.textclean import clean_line

log = logging.getLogger(__name__)

KEY_FRAMES = 3  # innermost frames that make the key
KEPT_FRAMES = 10  # innermost frames kept on the fingerprint (for code context in the diagnosis)
TEMPLATE_LIMIT = 300
SHUTDOWN_EXCEPTIONS = frozenset({"KeyboardInterrupt", "SystemExit"})
MAX_ALIASES = 100_000  # merged keys remembered for `canonical_key`; then forgotten, oldest first
HEADER_SOURCES = 1000  # sources whose header is learned; more use per-line stripping only
SAVE_RETRY_S = 30.0  # after a failed save of template clusters, the next try waits this long
CHURN_SAVE_S = 10.0  # while full sets evict clusters, their changes are saved at most this often

_PY_FRAME = re.compile(r'^\s+File "(?P<path>[^"]+)", line (?P<line>\d+)(?:, in (?P<function>.+?))?\s*$')
_PY_EXCEPTION = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<message>.*))?$")
_JAVA_FRAME = re.compile(r"^\s+at (?P<function>[\w$.<>/-]+)\((?P<file>[^:)]*)(?::(?P<line>\d+))?\)")
_JAVA_EXCEPTION = re.compile(
    r"^\s*(?:Caused by: |Exception in thread \"[^\"]*\" )?(?P<type>[\w$.]+)(?::\s?(?P<message>.*))?$"
)
_ACCESS = re.compile(
    r"\"(?P<method>[A-Z]+) (?P<route>\S+) HTTP/[\d.]+\" (?P<status>\d{3})\b",
)
_UNLEVELLED_ERROR = re.compile(
    r"\b[A-Z]\w*(?:Error|Exception)\b|\bpanic:|^(?:error|fatal|panic)\b\s*[:\]]|\b(?:ERROR|FATAL|CRITICAL|SEVERE)\b"
    r"|\bTraceback \(most recent call last\)"
)
_ROUTE_ID = re.compile(r"(?<=/)[^/?#]*\d[^/?#]*")


@dataclass(frozen=True, slots=True)
class _Trace:
    exception_type: str | None
    message: str
    frames: tuple[Frame, ...]  # outermost first, innermost last


def fingerprint(record: LogRecord) -> Fingerprint:
    """What group `record` belongs to, and whether it is an error, from the record alone.

    `Grouper.fingerprint` adds template clustering across records; prefer it wherever records stream.
    """
    return _without_field_names(_fingerprint(record)[0])


def _fingerprint(record: LogRecord, header_model: HeaderModel | None = None) -> tuple[Fingerprint, bool]:
    """The record's own fingerprint, and whether its template is a plain message that may be clustered.
    `header_model`: the header learned for the record's file (bot.header_infer), if any."""
    lines = [strip_line_prefix(line) for line in record.text.split("\n")]
    trace = _python_trace(lines) or _java_trace(lines)
    if trace is not None and (trace.exception_type or trace.frames):
        return _trace_fingerprint(record.service, trace), False
    first = next((line for line in record.text.split("\n") if line.strip()), "")
    access = _ACCESS.search(first)
    if access is not None:
        status = int(access.group("status"))
        route = _ROUTE_ID.sub("<id>", access.group("route").split("?", 1)[0])
        template = f"HTTP {status} {access.group('method')} {route}"
        return _plain(record.service, template, is_error=status >= 500), False
    header = _header(first, header_model)
    template = _cap(mask(redacted(header.message)))  # redacted first: a title must hold no secret
    if header.severity is not None:
        is_error = header.severity >= ERROR_SEVERITY
    else:
        is_error = bool(_UNLEVELLED_ERROR.search(header.message))
    return _plain(record.service, template, is_error=is_error), True


def _header(line: str, model: HeaderModel | None) -> Header:
    """The line's level and message: from the fields of a structured line (JSON, logfmt); from the header
    `model` learned for its file when the line fits it and it has a level column; else the shorter of what
    per-line stripping leaves and what is left after the model's header."""
    text = strip_line_prefix(line)
    fields = structured_in(text)
    if fields is not None:
        level = fields.level.upper() if fields.level is not None else None
        # the names of its other fields are part of the event: one code site writes the same ones
        named = f" {FIELD_NAMES}{','.join(fields.fields)})" if fields.fields else ""
        return Header(level if level in LEVELS else None, fields.message + named)
    split = model.split(text) if model is not None and model.length else None
    if split is not None and model is not None and model.ends_with_level:
        cut, level = split
        return Header(level if level in LEVELS else None, strip_after_level(cut))
    header = strip_header(line)
    if split is None:
        return header
    message = strip_leading(split[0])
    level = split[1] if split[1] in LEVELS else header.level
    return Header(level, message) if len(message) < len(header.message) else Header(level, header.message)


class ClusterStore(Protocol):
    """Where a Grouper keeps its template clusters across restarts (bot.store.Store is one).

    Both methods raise StoreError when the storage fails; `load_clusters` returns the clusters of one
    service and error class in the order they were first saved. `save_clusters` inserts or updates
    `clusters` by key and deletes the keys in `forget`, in one transaction; `at` is the time of the save.
    """

    def load_clusters(self, service: str, is_error: bool) -> list[SavedCluster]: ...

    def save_clusters(
        self,
        service: str,
        is_error: bool,
        clusters: Sequence[SavedCluster],
        *,
        at: float,
        forget: Collection[str] = (),
    ) -> None: ...


@dataclass(slots=True)
class _Unsaved:
    """What one service and error class still has to write."""

    clusters: dict[str, Cluster] = field(default_factory=dict)
    forget: set[str] = field(default_factory=set)

    def add(self, changed: Iterable[Cluster], forgotten: Iterable[str]) -> None:
        for key in forgotten:
            self.clusters.pop(key, None)
            self.forget.add(key)
        for cluster in changed:
            self.clusters[cluster.key] = cluster
            self.forget.discard(cluster.key)


class Grouper:
    """Fingerprints with Drain-style template clusters per service and error class (bot.clusters).

    Keep one per process (the daemon's pipeline, one scan): keys of plain messages are the key of the
    first template of their cluster, so two lines that differ only in a plain-word variable share a key.

    With a `persistence`, the clusters of a service and error class are loaded the first time a record of
    theirs arrives; a cluster is saved when it is created or generalised and deleted when it is evicted,
    so a key survives a restart of the daemon. Never a write per line:
    - when a cluster was last matched is written with those saves, else in one batch every TOUCH_INTERVAL_S;
    - a full set that evicts (one-off templates churning) is saved at most every CHURN_SAVE_S;
    - a failing store never fails grouping: what is unsaved is kept and tried again after SAVE_RETRY_S.
    """

    def __init__(
        self,
        similarity: float = DEFAULT_SIMILARITY,
        *,
        persistence: ClusterStore | None = None,
        now: Callable[[], float] = time.time,
        max_clusters: int = DEFAULT_MAX_CLUSTERS,
        header: HeaderModel | None = None,
        header_share: float = DEFAULT_SHARE,
        header_gap: int = DEFAULT_MAX_GAP,
        depth: int = DEFAULT_DEPTH,
        merge_after: int = DEFAULT_MERGE_AFTER,
        settled_after: int = DEFAULT_SETTLED_AFTER,
        settled_words_after: int = DEFAULT_SETTLED_WORDS_AFTER,
    ) -> None:
        self.similarity = similarity
        self.depth = depth
        self.merge_after = merge_after
        self.settled_after = settled_after
        self.settled_words_after = settled_words_after
        self._aliases: dict[str, str] = {}  # key of a merged cluster → key of the cluster it went into
        self.max_clusters = max_clusters
        self.header_share = header_share
        self.header_gap = header_gap
        self._header = header  # one model for every record (a scan of one file)
        self._headers: dict[str, HeaderModel] = {}  # per source, once learned
        self._header_samples: dict[str, list[str]] = {}  # first lines of sources still learning
        self._persistence = persistence
        self._now = now
        self._clusters: dict[tuple[str, bool], TemplateClusters] = {}
        self._unsaved: dict[tuple[str, bool], _Unsaved] = {}
        self._hold_until = 0.0  # no save before (after a failure or while sets churn)
        self._held = False  # a change waits for the hold to end
        self._flush_at = 0.0  # when the `last_seen` times of matched clusters are written next
        self._evictions_saved = 0

    @classmethod
    def for_file(cls, path: Path, **options: Any) -> Grouper:
        """A grouper for one scan of `path`: every record is cut by the header learned from its head."""
        share = options.get("header_share", DEFAULT_SHARE)
        gap = options.get("header_gap", DEFAULT_MAX_GAP)
        return cls(header=learn_header(head_lines(path), share=share, max_gap=gap), **options)

    @property
    def has_merges(self) -> bool:
        return bool(self._aliases)

    def header_model(self, source: str) -> HeaderModel | None:
        """The header learned for `source`: from the head of its file for `file:` sources (read once it
        has SAMPLE_LINES lines), else from the first lines of its first SAMPLE_LINES records. None while
        it is still learning: those records are cut by per-line stripping only."""
        if self._header is not None:
            return self._header
        model = self._headers.get(source)
        if model is not None:
            return model
        if len(self._headers) >= HEADER_SOURCES:
            return None
        if source.startswith("file:"):
            sample = self._header_samples.setdefault(source, [])
            sample.append("")  # counts the records seen; the head is read again each time they double
            if len(sample) & (len(sample) - 1):
                return None
            head = head_lines(Path(source[5:]))
            if len(head) < SAMPLE_LINES:
                return None
        else:
            return None
        del self._header_samples[source]
        model = self._headers[source] = learn_header(head, share=self.header_share, max_gap=self.header_gap)
        return model

    def _learn_online(self, source: str, first_line: str) -> None:
        if source.startswith("file:") or source in self._headers or self._header is not None:
            return
        if len(self._headers) >= HEADER_SOURCES:
            return
        sample = self._header_samples.setdefault(source, [])
        sample.append(first_line)
        if len(sample) >= SAMPLE_LINES:
            del self._header_samples[source]
            self._headers[source] = learn_header(sample, share=self.header_share, max_gap=self.header_gap)

    def fingerprint(self, record: LogRecord) -> Fingerprint:
        model = self.header_model(record.source)
        if model is None:
            self._learn_online(record.source, strip_line_prefix(record.text.split("\n", 1)[0]))
        fp, clusterable = _fingerprint(record, model)
        if not clusterable:
            return fp
        group = (fp.service, fp.is_error)
        clusters = self._clusters.get(group)
        if clusters is None:
            clusters = self._clusters[group] = self._open(fp.service, fp.is_error)
        if self._persistence is None:
            cluster = clusters.assign(fp.template)
        else:
            now = self._now()
            cluster = clusters.assign(fp.template, now)
            if clusters.has_changes or self._held or now >= self._flush_at:
                if now >= self._hold_until:
                    self.save_pending(now)
                else:
                    self._held = True
        merges = clusters.take_merged()
        if merges:
            self._note_merges(fp.service, merges)
        if cluster.key == fp.template and cluster.size == 1:
            return _without_field_names(fp)
        return replace(fp, key=_hash(fp.service, "line", cluster.key), template=_shown(cluster.template))

    def _note_merges(self, service: str, merges: list[tuple[str, str]]) -> None:
        for merged, into in merges:
            if len(self._aliases) >= MAX_ALIASES:
                del self._aliases[next(iter(self._aliases))]
            self._aliases[_hash(service, "line", merged)] = _hash(service, "line", into)

    def canonical_key(self, key: str) -> str:
        """The key that `key` stands for now: clusters merged on evidence answer with the key of the
        cluster they went into (a scan regroups its earlier lines by it; see `merge_groups`)."""
        seen = 0
        while key in self._aliases and seen < 64:
            key = self._aliases[key]
            seen += 1
        return key

    def _open(self, service: str, is_error: bool) -> TemplateClusters:
        clusters = TemplateClusters(
            self.similarity,
            max_clusters=self.max_clusters,
            track_changes=self._persistence is not None,
            depth=self.depth,
            merge_after=self.merge_after,
            settled_after=self.settled_after,
            settled_words_after=self.settled_words_after,
        )
        if self._persistence is None:
            return clusters
        try:
            saved = self._persistence.load_clusters(service, is_error)
        except StoreError as exc:
            log.error("cannot load the template clusters of %s: %s; they start empty", service, exc)
            return clusters
        skipped = clusters.restore(saved)
        log.debug("loaded %d template clusters of %s (%d skipped)", len(saved) - skipped, service, skipped)
        return clusters

    def save_pending(self, now: float | None = None) -> bool:
        """Write what every set has to write now, one transaction per service and error class (also the
        way to flush before a stop). False when the store failed: it is tried again after SAVE_RETRY_S."""
        if self._persistence is None:
            return True
        now = self._now() if now is None else now
        evictions = 0
        for group, clusters in self._clusters.items():
            evictions += clusters.evictions
            changed, forgotten = clusters.take_changed(), clusters.take_forgotten()
            if changed or forgotten:
                self._unsaved.setdefault(group, _Unsaved()).add(changed, forgotten)
        self._held = False
        self._flush_at = now + TOUCH_INTERVAL_S
        for (service, is_error), unsaved in list(self._unsaved.items()):
            live = [c for c in unsaved.clusters.values() if not c.evicted]
            saved = [c.saved() for c in live]
            try:
                self._persistence.save_clusters(
                    service, is_error, saved, at=now, forget=sorted(unsaved.forget)
                )
            except StoreError as exc:
                self._hold_until = now + SAVE_RETRY_S
                self._held = True
                log.warning(
                    "cannot save the template clusters of %s: %s; trying again in %.0f s",
                    service,
                    exc,
                    SAVE_RETRY_S,
                )
                return False
            for cluster, snapshot in zip(live, saved, strict=True):
                cluster.saved_seen = snapshot.last_seen
                cluster.stored = True
            del self._unsaved[(service, is_error)]
        churning = evictions > self._evictions_saved
        self._evictions_saved = evictions
        self._hold_until = now + CHURN_SAVE_S if churning else 0.0
        return True

    def is_error(self, record: LogRecord) -> bool:
        """Whether `fingerprint(record)` calls the record an error, at a fraction of its cost: no template
        is masked or redacted, no cluster touched and no header learned (the header already learned for its
        source is used). A storm counts the records it cannot afford to group with it (bot.flow.storm_fold)."""
        lines = [strip_line_prefix(line) for line in record.text.split("\n")]
        trace = _python_trace(lines) or _java_trace(lines)
        if trace is not None and (trace.exception_type or trace.frames):
            return not (trace.exception_type in SHUTDOWN_EXCEPTIONS and not trace.message)
        first = next((line for line in record.text.split("\n") if line.strip()), "")
        access = _ACCESS.search(first)
        if access is not None:
            return int(access.group("status")) >= 500
        header = _header(first, self._header or self._headers.get(record.source))
        if header.severity is not None:
            return header.severity >= ERROR_SEVERITY
        return bool(_UNLEVELLED_ERROR.search(header.message))


def _plain(service: str, template: str, *, is_error: bool) -> Fingerprint:
    return Fingerprint(
        key=_hash(service, "line", template),
        service=service,
        is_error=is_error,
        exception_type=None,
        template=template,
    )


def _trace_fingerprint(service: str, trace: _Trace) -> Fingerprint:
    innermost = trace.frames[-KEY_FRAMES:]
    sites = [f"{_basename(frame.path)}:{frame.function}" for frame in innermost]
    key = _hash(service, "trace", trace.exception_type or "", *sites)
    template = trace.exception_type or "stack trace"
    if trace.message:
        template += f": {mask(redacted(trace.message))}"
    if innermost:
        template += f" at {_basename(innermost[-1].path)} in {innermost[-1].function}"
    is_error = not (trace.exception_type in SHUTDOWN_EXCEPTIONS and not trace.message)
    return Fingerprint(
        key=key,
        service=service,
        is_error=is_error,
        exception_type=trace.exception_type,
        template=_cap(template),
        frames=trace.frames[-KEPT_FRAMES:],
    )


def _python_trace(lines: list[str]) -> _Trace | None:
    starts = [i for i, line in enumerate(lines) if PY_TRACEBACK.match(line)]
    if not starts:
        return None
    frames: list[Frame] = []
    exception_type: str | None = None
    message = ""
    for line in lines[starts[-1] + 1 :]:
        frame = _PY_FRAME.match(line)
        if frame is not None:
            frames.append(Frame(frame.group("path"), int(frame.group("line")), frame.group("function") or ""))
            continue
        if not line.strip() or line.startswith((" ", "\t")) or PY_CHAIN.match(line):
            continue
        exception = _PY_EXCEPTION.match(line)
        if exception is not None:
            exception_type = exception.group("type")
            message = (exception.group("message") or "").strip()
        else:
            message = line.strip()
        break
    return _Trace(exception_type, message, tuple(frames))


def _java_trace(lines: list[str]) -> _Trace | None:
    exception_at = -1
    for i, line in enumerate(lines):
        body = line.strip()
        if JAVA_CAUSE.match(line) and not body.startswith("Suppressed:"):
            exception_at = i  # the last cause is the innermost exception
        elif exception_at < 0 and JAVA_EXCEPTION_LINE.match(body):
            exception_at = i
    if exception_at < 0:
        return None
    exception = _JAVA_EXCEPTION.match(lines[exception_at])
    if exception is None:
        return None
    frames: list[Frame] = []
    for line in lines[exception_at + 1 :]:
        frame = _JAVA_FRAME.match(line)
        if frame is None:
            break
        frames.append(Frame(frame.group("file"), int(frame.group("line") or 0), frame.group("function")))
    frames.reverse()  # Java prints the innermost call first
    if not frames and exception_at == 0 and len(lines) == 1:
        return None  # a lone exception-looking line is just a line
    return _Trace(exception.group("type"), (exception.group("message") or "").strip(), tuple(frames))


def _basename(path: str) -> str:
    return PureWindowsPath(path).name if "\\" in path else PurePosixPath(path).name


def _hash(*parts: str) -> str:
    return sha256_hex("\x00".join(parts).encode("utf-8", errors="replace"))[:16]


def _without_field_names(fp: Fingerprint) -> Fingerprint:
    return fp if FIELD_NAMES not in fp.template else replace(fp, template=_shown(fp.template))


def _shown(template: str) -> str:
    """The template as people see it: without the names of a structured line's other fields, which
    tell events apart but read as noise in a title."""
    at = template.find(" " + FIELD_NAMES)
    return _cap(template if at < 0 else template[:at])


def _cap(text: str) -> str:
    return text if len(text) <= TEMPLATE_LIMIT else text[: TEMPLATE_LIMIT - 1] + "…"


# --- healbot scan -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScanGroup:
    key: str
    template: str
    count: int  # records
    first_line: int
    sample: str  # the first record's text
    is_error: bool
    exception_type: str | None = None


@dataclass(frozen=True, slots=True)
class ScanResult:
    groups: tuple[ScanGroup, ...]  # most frequent first
    line_groups: list[tuple[int, str]]  # every line number → its record's group key
    lines: int
    records: int
    error_records: int
    complete: bool = True  # False for `scan_errors`: only error records were assembled and counted


def scan_lines(
    lines: Iterable[str], service: str = "scan", *, errors_only: bool = True, grouper: Grouper | None = None
) -> ScanResult:
    """Group `lines` exactly as the daemon would; line numbers count from 1. Without a `grouper`, the
    header is learned from the first lines."""
    texts = iter(lines)
    head = [
        clean_line(t.rstrip("\r\n").encode("utf-8", errors="replace"))
        for t in itertools.islice(texts, SAMPLE_LINES)
    ]
    if grouper is None:
        grouper = Grouper(header=learn_header(strip_line_prefix(t) for t in head))
    log_lines = (
        LogLine(text=text, source="scan", line_no=n)
        for n, text in enumerate(
            itertools.chain(
                head, (clean_line(t.rstrip("\r\n").encode("utf-8", errors="replace")) for t in texts)
            ),
            start=1,
        )
    )
    return _scan(log_lines, service, grouper, errors_only=errors_only)


def scan_file(
    path: Path,
    service: str = "scan",
    *,
    errors_only: bool = True,
    max_line_bytes: int = 8192,
    grouper: Grouper | None = None,
) -> ScanResult:
    """`scan_lines` over a file, streamed from its start; raises SourceError when it cannot be read.
    Without a `grouper`, the header is learned from the head of the file (`Grouper.for_file`)."""
    from bot.sources.file import FileSource  # not on `healbot scan`'s fast path

    source = FileSource(service, Path(path), max_line_bytes=max_line_bytes)
    lines = source.iter_lines()
    return _scan(lines, service, grouper or Grouper.for_file(Path(path)), errors_only=errors_only)


def scan_errors(path: Path, service: str = "scan", *, max_line_bytes: int = 8192) -> ScanResult:
    """The error groups of `scan_file(path, errors_only=True)`, found by searching the whole buffer.

    A regex over the memory-mapped file finds every line that could belong to an error record (a superset
    of what `fingerprint` calls an error); only a window around each hit goes through record assembly.
    `line_groups` holds the lines of error records only, and `records` counts error records.
    """
    return fastscan.scan_errors(
        Path(path), service, Grouper.for_file(Path(path)), max_line_bytes=max_line_bytes
    )


def merge_groups(result: ScanResult, grouper: Grouper) -> ScanResult:
    """`result` with the groups of clusters that were merged later in the scan counted as one, under the
    key they merged into (`Grouper.canonical_key`)."""
    if not grouper.has_merges:
        return result
    merged: dict[str, ScanGroup] = {}
    for group in sorted(result.groups, key=lambda g: g.first_line):
        key = grouper.canonical_key(group.key)
        known = merged.get(key)
        if known is None:
            merged[key] = replace(group, key=key)
        else:
            merged[key] = replace(known, count=known.count + group.count)
    groups = sorted(merged.values(), key=lambda g: (-g.count, g.first_line))
    line_groups = [(n, grouper.canonical_key(k)) for n, k in result.line_groups]
    return replace(result, groups=tuple(groups), line_groups=line_groups)


def _scan(lines: Iterator[LogLine], service: str, grouper: Grouper, *, errors_only: bool) -> ScanResult:
    assembler = RecordAssembler(service, "scan")
    counts: dict[str, int] = {}
    firsts: dict[str, tuple[LogRecord, Fingerprint]] = {}
    line_groups: list[tuple[int, str]] = []
    totals = {"lines": 0, "records": 0, "errors": 0}

    def take(records: list[LogRecord]) -> None:
        for record in records:
            fp = grouper.fingerprint(record)
            counts[fp.key] = counts.get(fp.key, 0) + 1
            firsts.setdefault(fp.key, (record, fp))
            line_groups.extend((record.first_line_no + i, fp.key) for i in range(record.line_count))
            totals["records"] += 1
            totals["errors"] += fp.is_error

    for line in lines:
        totals["lines"] += 1
        take(assembler.feed((line,), 0.0))
    take(assembler.flush())
    groups = [
        ScanGroup(
            key=key,
            template=fp.template,
            count=counts[key],
            first_line=record.first_line_no,
            sample=record.text,
            is_error=fp.is_error,
            exception_type=fp.exception_type,
        )
        for key, (record, fp) in firsts.items()
        if fp.is_error or not errors_only
    ]
    groups.sort(key=lambda g: (-g.count, g.first_line))
    line_groups.sort()
    result = ScanResult(
        groups=tuple(groups),
        line_groups=line_groups,
        lines=totals["lines"],
        records=totals["records"],
        error_records=totals["errors"],
    )
    return merge_groups(result, grouper)


def format_scan(result: ScanResult, *, sample_lines: int = 3, width: int = 110, raw: bool = False) -> str:
    """A terminal table: one row per group, the first lines of its sample under it: redacted as they would
    be sent (before they are clipped), or as they are in the file with `raw`."""
    error_groups = sum(1 for g in result.groups if g.is_error)
    records = str(result.records) if result.complete else "only errors assembled"
    out = [
        f"Lines: {result.lines}, records: {records} ({result.error_records} errors), "
        f"groups shown: {len(result.groups)} ({error_groups} errors)",
    ]
    if not result.groups:
        out.append("No matching groups.")
        return "\n".join(out) + "\n"
    out.append("")
    out.append(f"{'count':>7}  {'line':>7}  {'error':5}  {'key':16}  template")
    out.append(f"{'-' * 7}  {'-' * 7}  {'-' * 5}  {'-' * 16}  {'-' * 8}")
    room = max(20, width - 49)
    for group in result.groups:
        template = group.template if len(group.template) <= room else group.template[: room - 1] + "…"
        error = "yes" if group.is_error else "no"
        out.append(f"{group.count:>7}  {group.first_line:>7}  {error:5}  {group.key:16}  {template}")
        sample = (group.sample if raw else redacted(group.sample)).split("\n")
        for line in sample[:sample_lines]:
            shown = line if len(line) <= width - 11 else line[: width - 12] + "…"
            out.append(f"{'':9}| {shown}")
        if len(sample) > sample_lines:
            out.append(f"{'':9}| … ({len(sample) - sample_lines} more lines)")
    return "\n".join(out) + "\n"


__all__ = [
    "ClusterStore",
    "Grouper",
    "ScanGroup",
    "ScanResult",
    "fingerprint",
    "format_scan",
    "merge_groups",
    "scan_errors",
    "scan_file",
    "scan_lines",
]
