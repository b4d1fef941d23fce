"""The error ledger kept in the store (issue 17.1): what a restarted daemon loads counts as the running one
did, within the same bounds (times per fingerprint, fingerprints per service, the horizon)."""

from __future__ import annotations

from pathlib import Path

from bot.health import ErrorLedger
from bot.store import Store


def saved(ledger: ErrorLedger, store: Store) -> None:
    store.save_error_series(*ledger.take_changes())


def reloaded(store: Store, **bounds: float) -> ErrorLedger:
    again = ErrorLedger(**bounds)  # type: ignore[arg-type]
    again.restore(store.error_series())
    return again


def test_a_restart_erased_the_error_counts_of_the_before_window(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state.db")
    ledger = ErrorLedger(max_timestamps=5, bucket_s=10.0)
    for second in range(100):
        ledger.record("web", "fp-a", 1000.0 + second)
    ledger.record("web", "fp-b", 1050.5)
    ledger.record("api", "fp-a", 1020.0)
    saved(ledger, store)
    store.close()

    store = Store.open(tmp_path / "state.db")
    again = reloaded(store, max_timestamps=5, bucket_s=10.0)
    for window in ((0.0, 5000.0), (1000.0, 1050.0), (1096.0, 1100.0), (1050.0, 1050.6)):
        assert again.counts("web", *window) == ledger.counts("web", *window), window
    assert again.counts("api", 0.0, 5000.0) == {"fp-a": 1}
    assert again.stored() == ledger.stored()


def test_only_what_changed_is_written_and_nothing_when_idle(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state.db")
    ledger = ErrorLedger()
    ledger.record("web", "a", 1.0)
    ledger.record("web", "b", 2.0)
    saved(ledger, store)
    ledger.record("web", "a", 3.0)

    changed, dropped = ledger.take_changes()
    assert [(s.fingerprint, s.recent) for s in changed] == [("a", (1.0, 3.0))] and dropped == []
    assert ledger.take_changes() == ([], [])


def test_an_evicted_or_pruned_fingerprint_leaves_the_store_too(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state.db")
    ledger = ErrorLedger(max_fingerprints=2, horizon_s=100.0, bucket_s=10.0)
    ledger.record("web", "a", 1.0)
    ledger.record("web", "b", 2.0)
    saved(ledger, store)
    ledger.record("web", "c", 3.0)  # evicts a, the stalest
    saved(ledger, store)
    assert sorted(s.fingerprint for s in store.error_series()) == ["b", "c"]

    ledger.record("web", "d", 500.0)  # b and c are beyond the horizon now
    saved(ledger, store)
    assert [s.fingerprint for s in store.error_series()] == ["d"]


def test_a_restore_keeps_the_bounds_of_the_ledger(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state.db")
    wide = ErrorLedger(max_timestamps=50)
    for n, fingerprint in enumerate("abcde"):
        for k in range(10):
            wide.record("web", fingerprint, 100.0 * n + k)
    saved(wide, store)

    narrow = reloaded(store, max_timestamps=4, max_fingerprints=2)
    assert narrow.counts("web", 0.0, 1000.0) == {"d": 4, "e": 4}  # the most recently seen, newest times
    assert narrow.stored() == 8
    changed, dropped = narrow.take_changes()
    assert changed == [] and sorted(dropped) == [("web", f) for f in "abc"]


def test_a_store_that_refuses_the_save_gets_it_again_next_time(tmp_path: Path) -> None:
    ledger = ErrorLedger(max_fingerprints=1)
    ledger.record("web", "a", 1.0)
    ledger.record("web", "b", 2.0)
    changed, dropped = ledger.take_changes()
    ledger.keep_changes(changed, dropped)  # as the pipeline does when the store refuses

    assert ledger.take_changes() == (changed, dropped)
    assert [s.fingerprint for s in changed] == ["b"] and dropped == [("web", "a")]


def test_old_series_are_pruned_from_the_store_at_start(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "state.db")
    ledger = ErrorLedger()
    ledger.record("web", "old", 10.0)
    ledger.record("web", "new", 5000.0)
    saved(ledger, store)

    assert store.prune_error_series(before=1000.0) == 1
    assert [s.fingerprint for s in store.error_series()] == ["new"]
