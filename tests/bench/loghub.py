"""Grouping accuracy (GA, Zhu et al. 2019) of healbot's shipped defaults on the Loghub-2k sets.

The data stays outside the project's tree, in `../shared/data/loghub-2k` (Loghub, Zhu et al., ISSRE
2023: see its LICENSE and CITATION). Each set is grouped by `healbot scan --all`'s own code on the raw
file; drain3, the reference, is run on the same raw lines in the same process when it is installed.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bot.grouping import scan_file

SETS = ("HDFS", "Hadoop", "Zookeeper", "BGL", "Linux", "HealthApp", "Proxifier", "Mac")
DATA_DIR = Path(
    os.environ.get("HEALBOT_LOGHUB_DIR", Path(__file__).resolve().parents[3] / "shared/data/loghub-2k")
)
# drain3 figures from the data's README (one generic mask set), printed next to our own drain3 run.
README_DRAIN3_GENERIC = {
    "HDFS": 0.998,
    "Hadoop": 0.964,
    "Zookeeper": 0.967,
    "BGL": 0.916,
    "Linux": 0.686,
    "HealthApp": 0.981,
    "Proxifier": 0.017,
    "Mac": 0.668,
}


@dataclass(frozen=True, slots=True)
class LoghubSet:
    name: str
    log: Path
    truth: tuple[str, ...]  # EventId per line, in file order
    contents: tuple[str, ...]  # the message after the set's own header regex (the paper's setup)

    @classmethod
    def load(cls, name: str, data_dir: Path = DATA_DIR) -> LoghubSet:
        folder = data_dir / name
        with (folder / f"{name}_2k.log_structured_corrected.csv").open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        truth = tuple(row["EventId"] for row in rows)
        return cls(name, folder / f"{name}_2k.log", truth, tuple(row["Content"] for row in rows))

    def lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8", errors="replace").splitlines()


def available(data_dir: Path = DATA_DIR) -> bool:
    return all((data_dir / name / f"{name}_2k.log").is_file() for name in SETS)


def grouping_accuracy(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> float:
    """Share of lines whose predicted group holds exactly the lines of their true group."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} lines")
    by_pred: dict[Hashable, set[int]] = {}
    by_true: dict[Hashable, set[int]] = {}
    for i, (p, t) in enumerate(zip(predicted, truth, strict=True)):
        by_pred.setdefault(p, set()).add(i)
        by_true.setdefault(t, set()).add(i)
    correct = 0
    for members in by_true.values():
        first = next(iter(members))
        if by_pred[predicted[first]] == members:
            correct += len(members)
    return correct / len(truth) if truth else 1.0


def healbot_groups(data: LoghubSet) -> list[str]:
    result = scan_file(data.log, service="loghub", errors_only=False)
    by_line = dict(result.line_groups)
    return [by_line.get(n, f"missing-{n}") for n in range(1, len(data.truth) + 1)]


def drain3_groups(data: LoghubSet) -> list[int] | None:
    """drain3 with its defaults plus one generic mask set, on each line's content after the set's own
    header regex (the reference gets per-set header parsing; healbot does not); None when not installed."""
    try:
        from drain3 import TemplateMiner  # type: ignore[import-not-found,import-untyped,unused-ignore]
        from drain3.masking import MaskingInstruction  # type: ignore[import-not-found,import-untyped,unused-ignore]
        from drain3.template_miner_config import TemplateMinerConfig  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    config = TemplateMinerConfig()
    config.profiling_enabled = False
    config.masking_instructions = [
        MaskingInstruction(r"((?<=[^A-Za-z0-9])|^)(\d{1,3}\.){3}\d{1,3}(:\d+)?((?=[^A-Za-z0-9])|$)", "IP"),
        MaskingInstruction(r"((?<=[^A-Za-z0-9])|^)(0x[a-fA-F0-9]+)((?=[^A-Za-z0-9])|$)", "HEX"),
        MaskingInstruction(r"((?<=[^A-Za-z0-9])|^)([\-\+]?\d+)((?=[^A-Za-z0-9])|$)", "NUM"),
    ]
    miner = TemplateMiner(config=config)
    return [int(miner.add_log_message(line)["cluster_id"]) for line in data.contents]


@dataclass(frozen=True, slots=True)
class SetScore:
    name: str
    healbot: float
    healbot_s: float
    drain3: float | None
    drain3_s: float | None


def _timed(func: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    value = func()
    return value, time.perf_counter() - started


def score(name: str, data_dir: Path = DATA_DIR) -> SetScore:
    data = LoghubSet.load(name, data_dir)
    ours, ours_s = _timed(lambda: healbot_groups(data))
    theirs, theirs_s = _timed(lambda: drain3_groups(data))
    assert isinstance(ours, list)
    drain3 = grouping_accuracy(theirs, data.truth) if isinstance(theirs, list) else None
    return SetScore(
        name, grouping_accuracy(ours, data.truth), ours_s, drain3, theirs_s if drain3 is not None else None
    )


def run() -> list[SetScore]:
    print("grouping accuracy (GA) on Loghub-2k, shipped defaults, no per-set tuning")
    if not available():
        print(f"  SKIPPED: Loghub-2k data not found in {DATA_DIR} (set HEALBOT_LOGHUB_DIR)\n")
        return []
    scores = [score(name) for name in SETS]
    has_drain3 = all(s.drain3 is not None for s in scores)
    print(
        f"  {'set':10} {'healbot':>8} {'drain3':>8} {'README':>8} {'ratio':>7} {'healbot s':>10} {'drain3 s':>9}"
    )
    for s in scores:
        drain3 = f"{s.drain3:8.3f}" if s.drain3 is not None else f"{'n/a':>8}"
        ratio = f"{s.healbot / s.drain3:7.2f}" if s.drain3 else f"{'n/a':>7}"
        drain3_s = f"{s.drain3_s:9.3f}" if s.drain3_s is not None else f"{'n/a':>9}"
        print(
            f"  {s.name:10} {s.healbot:8.3f} {drain3} {README_DRAIN3_GENERIC[s.name]:8.3f} {ratio} "
            f"{s.healbot_s:10.3f} {drain3_s}"
        )
    ours = sum(s.healbot for s in scores) / len(scores)
    line = f"  {'average':10} {ours:8.3f}"
    if has_drain3:
        theirs = sum(s.drain3 or 0.0 for s in scores) / len(scores)
        line += f" {theirs:8.3f} {sum(README_DRAIN3_GENERIC.values()) / len(SETS):8.3f} {ours / theirs:7.2f}"
    else:
        line += "   drain3 not installed (pip install '.[bench]')"
    print(line)
    worst = min(scores, key=lambda s: s.healbot)
    print(
        f"  target: average >= 0.90 (met: {ours >= 0.90}), no set below 0.70 (worst {worst.name} {worst.healbot:.3f})\n"
    )
    return scores


if __name__ == "__main__":
    run()
