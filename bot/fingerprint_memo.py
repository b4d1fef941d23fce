"""Fingerprints of a flood at dictionary speed: records that differ only in their digits share one.

A flood repeats a few messages with other timestamps, pids, ids and durations. Grouping sees digits only
through character classes (`\\d`, `[0-9a-f]`, lengths such as `\\d{1,3}`) except for the literal `0` of
`0x…`, so two records whose texts are equal once every digit 1-9 is written as `1` (their *shape*) get
the same fingerprint. The exceptions are kept out of the memo:
- an access-log line (`HTTP/`): its template holds the status code, and 5xx decides whether it is an error;
- a text that may hold a secret (bot.redact's trigger pre-check, which is itself blind to digit values):
  redaction looks at digit values (card numbers by their Luhn digit, the entropy of tokens).

The memo lives for one batch (`clear` between batches), so each shape still reaches the Grouper once per
batch and its template cluster stays recently matched. Every `CHECK_EVERY`-th hit of a shape is grouped
in full and compared; a shape whose fingerprint differed is grouped in full from then on (logged once), so
a change in grouping that makes digit values matter costs speed, not correctness.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from bot.models import Fingerprint, LogRecord
from bot.redact import may_hold_secret  # blind to digit values: one answer for every text of a shape

log = logging.getLogger(__name__)

CHECK_EVERY = 1024  # hits of a shape between two full groupings that check the memo
MAX_SHAPES = 4096  # per batch; a batch of more distinct shapes groups the rest in full
_SHAPE = bytes.maketrans(b"23456789", b"11111111")


class FingerprintSource(Protocol):
    """What the memo stands in front of (bot.grouping.Grouper)."""

    def fingerprint(self, record: LogRecord) -> Fingerprint: ...


@dataclass(slots=True)
class _Entry:
    fingerprint: Fingerprint | None  # None: this shape is grouped in full every time
    hits: int = 0


def shape(text: str) -> bytes:
    """`text` with every digit 1-9 written as 1 (`0` stays: `0x…` is hex), as bytes (the fast translate;
    "surrogatepass" keeps the encoding one-to-one)."""
    return text.encode("utf-8", "surrogatepass").translate(_SHAPE)


class FingerprintMemo:
    """`fingerprint(record)` as `grouper` gives it, computed once per shape of record text and batch."""

    def __init__(self, grouper: FingerprintSource) -> None:
        self._grouper = grouper
        self._entries: dict[tuple[str, bytes], _Entry] = {}
        # Hashes of the shapes a check found wrong, grouped in full from then on: a collision only costs
        # speed, and the set stays small whatever the lines' length.
        self._distrusted: set[int] = set()
        self._warned = False

    def clear(self) -> None:
        self._entries.clear()

    def remembers(self, record: LogRecord) -> bool:
        """True when `fingerprint(record)` would answer from the memo (a remembered, trusted shape)."""
        entry = self._entries.get((record.service, shape(record.text)))
        return entry is not None and entry.fingerprint is not None

    def fingerprint(self, record: LogRecord) -> Fingerprint:
        key = (record.service, shape(record.text))
        entry = self._entries.get(key)
        if entry is None:
            fp = self._grouper.fingerprint(record)
            if len(self._entries) < MAX_SHAPES:
                trusted = _memoizable(key[1]) and hash(key) not in self._distrusted
                self._entries[key] = _Entry(fp if trusted else None)
            return fp
        known = entry.fingerprint
        if known is None:
            return self._grouper.fingerprint(record)
        entry.hits += 1
        if entry.hits % CHECK_EVERY:
            return known
        fp = self._grouper.fingerprint(record)
        if fp.key != known.key or fp.is_error != known.is_error:
            entry.fingerprint = None
            if len(self._distrusted) < MAX_SHAPES:
                self._distrusted.add(hash(key))
            if not self._warned:
                self._warned = True
                log.warning(
                    "grouping told two records of one shape apart (%r, %r): such records are grouped one by"
                    " one from now on",
                    known.template[:80],
                    fp.template[:80],
                )
        return fp


def _memoizable(text_shape: bytes) -> bool:
    return b"HTTP/" not in text_shape and not may_hold_secret(text_shape.decode("utf-8", "surrogatepass"))
