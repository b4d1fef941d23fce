"""Counting a storming service's errors at a fraction of grouping's cost.

While a service storms (its errors of new kinds are folded into its storm incident, bot.flow.storm) and may
open no incident now, grouping each record in full costs more than a flood of distinct errors leaves time
for: every one-off line makes a template cluster (and evicts one at the cap) and has its template masked,
only for the store to fold it into the storm. So, record by record in a batch:

1. a record of a digit shape that full grouping saw during this storm (bot.fingerprint_memo's shapes, and
   only the shapes that memo would trust) gets the fingerprint it got then: a known incident's records
   keep counting into it;
2. the first `LEARN_PER_BATCH` others are grouped in full: clusters keep learning, a variant that grouping
   puts into an open incident is counted there and learnt for step 1, and a new kind is folded into the
   storm by the store as before;
3. the rest are only told apart as errors or not (`Grouper.is_error`, no mask, no cluster); the errors are
   counted into the storm incident. The tally redacts the first `max_samples` of them only.

The trade-off: a record of an open incident whose digit shape no full grouping saw during the storm, once
the batch's learning budget is spent, counts into the storm instead of its incident. Every error record
is still counted exactly once. A record grouped in full whose error class `Grouper.is_error` would have
told differently stops folding for good (logged once): the daemon then groups every record in full.
"""

from __future__ import annotations

import logging

from bot.fingerprint_memo import FingerprintMemo, memo_key
from bot.flow.context import LOGGER_NAME
from bot.grouping import Grouper
from bot.models import Fingerprint, LogRecord

log = logging.getLogger(LOGGER_NAME)

LEARN_PER_BATCH = 64  # records of a storming batch still grouped in full
MAX_KNOWN = 4096  # shapes remembered per storming service; the oldest is forgotten first

_Shape = tuple[str, bool, bytes]  # bot.fingerprint_memo's key of a record without its redaction text


class StormFold:
    """Fingerprints for the records of a storming service's batch (see the module's doc): `begin` a
    batch, then `fingerprint` each record."""

    def __init__(self, grouper: Grouper, memo: FingerprintMemo) -> None:
        self._grouper = grouper
        self._memo = memo  # the batch's memo, which full grouping goes through
        self._known: dict[str, dict[_Shape, Fingerprint]] = {}  # by service
        self._shapes: dict[_Shape, Fingerprint] = {}  # the batch's service's
        self._storm: Fingerprint | None = None
        self._learn = 0
        self.trusted = True  # False once `Grouper.is_error` disagreed with full grouping
        self.stormed = 0  # error records of the batch counted into the storm without grouping

    def begin(self, service: str, storm: Fingerprint) -> None:
        self._shapes = self._known.setdefault(service, {})
        self._storm = storm
        self._learn = LEARN_PER_BATCH
        self.stormed = 0

    def storm_over(self, service: str) -> None:
        """The shapes learnt during the storm go: grouping decides again, cluster by cluster."""
        self._known.pop(service, None)

    def fingerprint(self, record: LogRecord) -> Fingerprint | None:
        """The record's fingerprint; None when it is no error and was not grouped in full."""
        key = memo_key(record)
        known = self._shapes.get(key[0])
        if known is not None:
            return known
        if self._learn > 0:
            self._learn -= 1
            return self._learnt(record, key[0], self._memo.fingerprint(record, key))
        if not self._grouper.is_error(record):
            return None
        assert self._storm is not None, "begin() a batch first"
        self.stormed += 1
        return self._storm

    def _learnt(self, record: LogRecord, shape: _Shape, fp: Fingerprint) -> Fingerprint:
        if self.trusted and self._grouper.is_error(record) != fp.is_error:
            self.trusted = False
            log.warning(
                "%s: telling errors apart without grouping disagreed with grouping (%r); a storm's records"
                " are grouped one by one from now on",
                fp.service,
                fp.template[:80],
            )
        if self._memo.remembers(record):  # a shape the memo trusts to stand for every text of it
            if len(self._shapes) >= MAX_KNOWN:
                del self._shapes[next(iter(self._shapes))]
            self._shapes[shape] = fp
        return fp
