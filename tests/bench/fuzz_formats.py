"""Held-out-style logs: random formats and random message templates, with the truth by construction.

tests/bench/formats.py frames one pool of twenty messages in ten fixed formats; a grouping can fit those.
Here every file is new: its header is composed from general field kinds (dates and times in ISO, syslog,
apache, epoch, `MM-DD` and `yy/MM/dd` forms, counters, pids, thread names, hosts, node names, levels in
several spellings, dotted or bracketed components, request-id groups, `file:line`), laid out by one of a
few families, and its messages come from random templates over a large random vocabulary with variables of
many kinds (numbers, hex, uuids, addresses with ports, `host:port`, paths, URLs, `key=value`, quoted
strings, durations, sizes, e-mails, MACs, lists of varying length, plain words such as user names). Some
templates differ from another in one constant word (`started`/`stopped`); template frequencies are
Zipf-like, so some appear once or twice. The truth of a line is its template.

Five families came with issue 13.1, for common format classes the first nine lacked: bracketed day-name
stamps with a bracketed level and per-template `[client …]` groups, padded level/component columns after a
comma, two-digit-year slash dates with a dotted logger, logfmt (alone or after a collector's prefix) and an
epoch + date + node prefix before a whole syslog header. Their messages also draw JSON fragments, Windows
paths, versions, short and long hex ids, Go-style and other unit durations, percentages, stamps, quoted
words and `key="…"` values; the first nine families' files are byte-for-byte what they were.

Seeds are split: TUNING_SEEDS (and any seed below 1000) may be looked at while developing; REPORT_SEEDS
are only scored, never inspected, and the gap between the two is the overfitting measure. drain3 gets each line's message with the generator's known
header stripped (the header regex a person would write for a known format).
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bot.grouping import scan_file
from tests.bench.loghub import drain3_miner, grouping_accuracy

TUNING_SEEDS = range(0, 6)
REPORT_SEEDS = range(1000, 1012)
LINES = 1000

# --- vocabulary ------------------------------------------------------------------------------------

_COMMON_TEXT = (
    "connection request response session worker queue task job thread server client cache index table "
    "record file block chunk segment replica partition shard node peer cluster lease lock token user "
    "account policy rule route handler channel socket buffer stream packet frame batch snapshot checkpoint "
    "transaction commit rollback query update delete insert backup restore volume mount device driver "
    "module plugin service daemon process scheduler executor container image manifest config setting "
    "certificate key secret quota limit threshold metric counter gauge timer event signal message reply "
    "opened closed accepted rejected refused received sent written read loaded saved flushed evicted "
    "expired renewed registered removed added created destroyed allocated released acquired granted "
    "denied failed succeeded completed aborted retried skipped ignored dropped queued scheduled resumed "
    "paused starting stopping waiting running ready idle busy healthy degraded unavailable missing invalid "
    "unknown unexpected duplicate stale corrupt empty full partial pending active for from to with on in "
    "after before by of at into over under while because the a new old next last current remote local"
)
_COMMON = tuple(_COMMON_TEXT.split())
_ONSETS = (
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "st",
    "tr",
)
_NUCLEI = ("a", "e", "i", "o", "u", "ai", "ou", "ea")
_CODAS = ("", "", "n", "r", "s", "l", "x", "nd", "rk", "st")


def _pseudo_word(rng: random.Random) -> str:
    return "".join(
        rng.choice(_ONSETS) + rng.choice(_NUCLEI) + rng.choice(_CODAS) for _ in range(rng.randint(1, 3))
    )


def vocabulary(rng: random.Random, size: int = 1500) -> list[str]:
    """Common log words first (they come up most, as in real logs), then made-up words."""
    words = list(_COMMON)
    seen = set(words)
    while len(words) < size:
        word = _pseudo_word(rng)
        if word not in seen and len(word) > 2:
            seen.add(word)
            words.append(word)
    return words


def _zipf_pick(rng: random.Random, items: list[str], s: float = 1.1) -> str:
    # rank drawn by inverse transform of a continuous Pareto, clipped: cheap and Zipf-like
    rank = int(len(items) ** rng.random() ** s) - 1
    return items[min(max(rank, 0), len(items) - 1)]


# --- variables -------------------------------------------------------------------------------------

HEX = "0123456789abcdef"
TLDS = ("com", "net", "org", "io", "cn", "de", "jp", "uk", "ru", "fr", "local", "internal")


def _hexs(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(HEX) for _ in range(n))


def _uuid(rng: random.Random) -> str:
    return "-".join(_hexs(rng, n) for n in (8, 4, 4, 4, 12))


def _ip(rng: random.Random) -> str:
    return ".".join(str(rng.randrange(1, 255)) for _ in range(4))


class Variables:
    """Makers of variable values of many kinds; some draw from pools the file fixes (hosts, users)."""

    def __init__(self, rng: random.Random, words: list[str]) -> None:
        self.rng = rng
        self.words = words
        self.users = [_pseudo_word(rng) + rng.choice(("", "", str(rng.randrange(99)))) for _ in range(400)]
        self.hosts_plain = [
            ".".join(_pseudo_word(rng) for _ in range(rng.randint(1, 3))) + "." + rng.choice(TLDS)
            for _ in range(60)
        ]
        self.hosts_digits = [
            f"{_pseudo_word(rng)}-{rng.randrange(1, 99)}.{_pseudo_word(rng)}.{rng.choice(TLDS)}"
            for _ in range(40)
        ]
        self.makers: dict[str, Callable[[str], str]] = {
            "int": lambda _: str(rng.randrange(10 ** rng.randint(1, 7))),
            "negint": lambda _: str(-rng.randrange(1, 10**5)),
            "float": lambda _: f"{rng.uniform(0, 1000):.{rng.randint(1, 4)}f}",
            "hex": lambda _: "0x" + _hexs(rng, rng.choice((4, 8, 12))),
            "barehex": lambda arg: _hexs(rng, int(arg)),
            "uuid": lambda _: _uuid(rng),
            "ip": lambda _: _ip(rng),
            "ipport": lambda _: f"{_ip(rng)}:{rng.randrange(1, 65535)}",
            "hostport": lambda _: (
                f"{rng.choice(self.hosts_plain)}:{rng.choice((80, 443, 8080, 5070, 3128, 22))}"
            ),
            "hostdigits": lambda _: f"{rng.choice(self.hosts_digits)}:{rng.randrange(1, 65535)}",
            "host": lambda _: rng.choice(self.hosts_plain + self.hosts_digits),
            "path": lambda arg: (
                "/"
                + "/".join(rng.choice(words[:300]) for _ in range(rng.randint(2, 5)))
                + arg.replace("none", "")
            ),
            "url": lambda _: (
                f"{rng.choice(('http', 'https'))}://{rng.choice(self.hosts_plain)}/"
                + "/".join(rng.choice(words[:200]) for _ in range(rng.randint(1, 3)))
                + rng.choice(("", f"?id={rng.randrange(999)}"))
            ),
            "quoted": lambda _: '"' + " ".join(rng.choice(words) for _ in range(rng.randint(1, 4))) + '"',
            "duration": lambda arg: {
                "ms": f"{rng.randrange(1, 9999)}ms",
                "s": f"{rng.uniform(0, 60):.2f}s",
                "seconds": f"{rng.randrange(1, 90)} seconds",
            }[arg],
            "size": lambda arg: {
                "bytes": f"{rng.randrange(1, 9999)} bytes",
                "MB": f"{rng.uniform(0, 900):.1f}MB",
                "KB": f"{rng.randrange(1, 999)}KB",
            }[arg],
            "email": lambda _: f"{rng.choice(self.users)}@{rng.choice(self.hosts_plain)}",
            "mac": lambda _: ":".join(_hexs(rng, 2) for _ in range(6)),
            "numlist": lambda _: (
                "[" + ", ".join(str(rng.randrange(999)) for _ in range(rng.randint(1, 6))) + "]"
            ),
            "wordlist": lambda _: ",".join(rng.sample(words[:80], rng.randint(1, 4))),
            "user": lambda _: rng.choice(self.users),
            "idword": lambda arg: f"{arg}_{rng.randrange(10**9)}",
            "node": lambda arg: (
                f"node-{rng.randrange(1, 999)}"
                if arg == "dash"
                else f"R{rng.randrange(80)}-M{rng.randrange(2)}-N{rng.randrange(16)}"
            ),
        }
        self.base_kinds = list(self.makers)
        # value kinds only the families of issue 13.1 draw (the older families' files stay as they were)
        self.makers.update(
            {
                "json": self._json,
                "winpath": lambda _: (
                    rng.choice(("C", "D"))
                    + ":\\"
                    + "\\".join(rng.choice(words[:300]).title() for _ in range(rng.randint(1, 4)))
                    + rng.choice((".dll", ".exe", ".log", ".mum", ""))
                ),
                "version": lambda arg: (
                    ("v" if arg == "v" else "")
                    + ".".join(str(rng.randrange(30 if j < 2 else 30000)) for j in range(rng.randint(2, 4)))
                ),
                "sha": lambda arg: _hexs(rng, int(arg)),
                "unitdur": lambda arg: {
                    "go": rng.choice(
                        (
                            f"{rng.randrange(1, 59)}m{rng.uniform(0, 59):.1f}s",
                            f"{rng.uniform(0, 9):.3f}s",
                            f"{rng.randrange(1, 999)}µs",
                            f"{rng.randrange(1, 23)}h{rng.randrange(59)}m{rng.randrange(59)}s",
                        )
                    ),
                    "us": f"{rng.randrange(1, 99999)}us",
                    "msf": f"{rng.uniform(0, 500):.2f} ms",
                    "min": f"{rng.randrange(1, 90)}min",
                }[arg],
                "pct": lambda _: f"{rng.uniform(0, 100):.{rng.randint(0, 2)}f}%",
                "isotime": lambda _: time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime(rng.uniform(1.0e9, 1.8e9))
                ),
                "squoted": lambda _: "'" + rng.choice(words) + "'",
                "kvquoted": lambda arg: (
                    f'{arg}="' + " ".join(rng.choice(words) for _ in range(rng.randint(1, 3))) + '"'
                ),
                "hexaddr": lambda _: "@0x" + _hexs(rng, rng.choice((9, 11, 12))),
                "errcode": lambda _: "0x" + rng.choice(("8007", "C000", "8000")) + _hexs(rng, 4).upper(),
            }
        )
        self.rich_kinds = list(self.makers)
        self.kinds = self.base_kinds
        # the format of a slot is fixed by its template (one code site prints one size unit)
        self.variants: dict[str, tuple[str, ...]] = {
            "barehex": ("12", "16", "32"),
            "path": ("none", ".log", ".conf", ".dat", "/"),
            "duration": ("ms", "s", "seconds"),
            "size": ("bytes", "MB", "KB"),
            "idword": ("blk", "job", "task", "attempt", "container"),
            "node": ("dash", "rack"),
            "version": ("v", ""),
            "sha": ("7", "12", "40"),
            "unitdur": ("go", "us", "msf", "min"),
        }

    def slot(self) -> str:
        """A variable kind with the format its template prints it in, as `kind@variant`."""
        kind = self.rng.choice(self.kinds)
        if kind == "json":  # a code site prints the same fields
            return "json@" + ",".join(self.rng.sample(self.words[:300], self.rng.randint(1, 4)))
        if kind == "kvquoted":
            return "kvquoted@" + self.rng.choice(self.words[:300])
        return f"{kind}@{self.rng.choice(self.variants.get(kind, ('',)))}"

    def _json(self, keys: str) -> str:
        """`{"a": 12, "b": "ready"}`: the keys are the template's, each value's kind follows from its key."""
        rng = self.rng
        out = []
        for key in keys.split(","):
            kind = zlib.crc32(key.encode()) % 5
            value = (
                str(rng.randrange(10**5)),
                f'"{rng.choice(self.words[:200])}"',
                rng.choice(("true", "false")),
                f"{rng.uniform(0, 100):.2f}",
                f'"{_uuid(rng)}"',
            )[kind]
            out.append(f'"{key}": {value}')
        return "{" + ", ".join(out) + "}"

    def value(self, slot: str) -> str:
        kind, _, variant = slot.partition("@")
        return self.makers[kind](variant)


# --- templates -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[tuple[str, str], ...]  # ("word", text) or ("var", kind) or ("kv", key:kind)
    level: str
    site: str  # component, tag or logger: fixed per template, as a code site is
    file_line: str

    def render(self, variables: Variables) -> str:
        out: list[str] = []
        for kind, text in self.parts:
            if kind == "word":
                out.append(text)
            elif kind == "kv":
                key, slot = text.split("=")
                out.append(f"{key}={variables.value(slot)}")
            else:
                out.append(variables.value(text))
        return " ".join(out)


LEVELS = ("INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR")
_DECORATIONS: tuple[Callable[[str], str], ...] = (
    lambda w: w,
    lambda w: w,
    lambda w: w,
    lambda w: w + ":",
    lambda w: w + ",",
    lambda w: f"({w})",
)


def templates(rng: random.Random, words: list[str], variables: Variables, count: int) -> list[Template]:
    made: list[Template] = []
    seen: set[tuple[tuple[str, str], ...]] = set()
    while len(made) < count:
        length = rng.randint(2, 12)
        parts: list[tuple[str, str]] = []
        for _ in range(length):
            roll = rng.random()
            if roll < 0.62:
                parts.append(("word", rng.choice(_DECORATIONS)(_zipf_pick(rng, words))))
            elif roll < 0.72:
                name = rng.choice(words[:400]).replace("-", "_")
                parts.append(("kv", f"{name}={variables.slot()}"))
            else:
                parts.append(("var", variables.slot()))
        if not any(kind == "word" for kind, _ in parts[:3]):
            parts.insert(0, ("word", _zipf_pick(rng, words)))
        key = tuple(parts)
        if key in seen:
            continue
        seen.add(key)
        site = rng.choice(
            (
                ".".join(rng.choice(words[150:]) for _ in range(rng.randint(2, 4))),
                rng.choice(words[150:]).title() + rng.choice(words[150:]).title(),
            )
        )
        file_line = f"{rng.choice(words[150:])}.{rng.choice(('go', 'py', 'java', 'c', 'cc', 'rs'))}:{rng.randrange(1, 2000)}"
        made.append(Template(key, rng.choice(LEVELS), site, file_line))
        if rng.random() < 0.12 and len(made) < count:  # a near twin: one constant word differs
            words_at = [i for i, (kind, _) in enumerate(parts) if kind == "word"]
            i = rng.choice(words_at)
            twin = list(parts)
            twin[i] = ("word", rng.choice(words[:300]))
            if tuple(twin) not in seen:
                seen.add(tuple(twin))
                made.append(Template(tuple(twin), rng.choice(LEVELS), site, file_line))
    return made


# --- headers ---------------------------------------------------------------------------------------

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(slots=True)
class Clock:
    """Seconds since an epoch the file picks; each line moves it on a little."""

    t: float

    def tick(self, rng: random.Random) -> time.struct_time:
        self.t += rng.expovariate(0.5)
        return time.gmtime(self.t)


def _frac(rng: random.Random, style: str) -> str:
    return {
        "": "",
        ",3": f",{rng.randrange(1000):03d}",
        ".3": f".{rng.randrange(1000):03d}",
        ".6": f".{rng.randrange(10**6):06d}",
    }[style]


def _level_spelling(rng: random.Random) -> Callable[[str], str]:
    short = {"DEBUG": "DBG", "INFO": "INF", "WARN": "WRN", "ERROR": "ERR"}
    long = {"WARN": "WARNING"}
    letter = {"DEBUG": "D", "INFO": "I", "WARN": "W", "ERROR": "E"}
    spellings: tuple[Callable[[str], str], ...] = (
        lambda lv: lv,
        lambda lv: long.get(lv, lv),
        lambda lv: lv.lower(),
        lambda lv: lv.title(),
        lambda lv: f"[{lv}]",
        lambda lv: f"<{lv.lower()}>",
        lambda lv: short[lv],
        lambda lv: letter[lv],
        lambda lv: f"{lv:<5}",
    )
    return rng.choice(spellings)


Header = Callable[[random.Random, Template, int], str]


class Family:
    """A header layout whose fields and spellings one file draws at random."""

    name = ""
    rich = False  # its messages draw the value kinds added with issue 13.1 (JSON, Windows paths, …)

    def __init__(self, rng: random.Random, words: list[str], variables: Variables) -> None:
        self.rng = rng
        self.words = words
        self.variables = variables
        self.clock = Clock(rng.uniform(1.0e9, 1.8e9))
        self.level = _level_spelling(rng)
        self.frac = rng.choice(("", ",3", ".3", ".6"))
        self.hosts = [
            rng.choice((_pseudo_word(rng), f"{_pseudo_word(rng)}-{rng.randrange(1, 40):02d}"))
            for _ in range(rng.randint(1, 6))
        ]
        self.threads = [
            rng.choice(
                (
                    f"pool-{rng.randrange(1, 5)}-thread-{rng.randrange(1, 20)}",
                    f"worker-{rng.randrange(1, 16)}",
                    "main",
                    f"{_pseudo_word(rng)}-{rng.randrange(1, 9)}",
                )
            )
            for _ in range(rng.randint(1, 12))
        ]
        self.users = variables.users

    def pid(self) -> str:
        return str(self.rng.randrange(100, 40000))

    def header(self, t: Template, i: int) -> str:
        raise NotImplementedError

    def compose(self, t: Template, i: int, message: str) -> tuple[str, str]:
        """The line, and its content as a person would cut it with the format's header regex."""
        header = self.header(t, i)
        return header + ("" if header.endswith("|") else " ") + message, message

    def per_template(self, t: Template, salt: str) -> int:
        """A number fixed by the template's code site: what one site always prints the same way."""
        return zlib.crc32(f"{self.name}|{salt}|{t.site}|{t.file_line}".encode())


class Iso(Family):
    name = "iso"

    def __init__(self, rng: random.Random, words: list[str], variables: Variables) -> None:
        super().__init__(rng, words, variables)
        self.sep = rng.choice((" ", "T"))
        self.zone = rng.choice(("", "Z", "+02:00", " +0000"))
        self.fields = rng.choice((("pid",), ("thread",), ("pid", "thread"), ()))
        self.after = rng.choice((" - ", ": ", " ", " | "))

    def header(self, t: Template, i: int) -> str:
        s = self.clock.tick(self.rng)
        out = [time.strftime(f"%Y-%m-%d{self.sep}%H:%M:%S", s) + _frac(self.rng, self.frac) + self.zone]
        for f in self.fields:
            out.append(self.pid() if f == "pid" else f"[{self.rng.choice(self.threads)}]")
        out.append(self.level(t.level))
        return " ".join(out) + " " + t.site + self.after.rstrip(" ")


class Syslog(Family):
    name = "syslog"

    def __init__(self, rng: random.Random, words: list[str], variables: Variables) -> None:
        super().__init__(rng, words, variables)
        self.with_level = rng.random() < 0.4

    def header(self, t: Template, i: int) -> str:
        s = self.clock.tick(self.rng)
        stamp = f"{MONTHS[s.tm_mon - 1]} {s.tm_mday:2d} {time.strftime('%H:%M:%S', s)}"
        prog = t.site.split(".")[-1].lower()
        out = f"{stamp} {self.rng.choice(self.hosts)} {prog}[{self.pid()}]:"
        return out + (f" {self.level(t.level)}" if self.with_level else "")


class Bracketed(Family):
    name = "bracketed"

    def __init__(self, rng: random.Random, words: list[str], variables: Variables) -> None:
        super().__init__(rng, words, variables)
        self.apache = rng.random() < 0.5
        self.client = rng.random() < 0.4
        self.glue = rng.choice((" ", ""))

    def header(self, t: Template, i: int) -> str:
        s = self.clock.tick(self.rng)
        if self.apache:
            stamp = f"[{DAYS[s.tm_wday]} {MONTHS[s.tm_mon - 1]} {s.tm_mday:02d} {time.strftime('%H:%M:%S', s)} {s.tm_year}]"
        else:
            stamp = "[" + time.strftime("%Y-%m-%d %H:%M:%S", s) + _frac(self.rng, self.frac) + "]"
        parts = [stamp, f"[{self.level(t.level).strip('[]<> ')}]"]
        if self.client:
            parts.append(f"[client {_ip(self.rng)}]")
        else:
            parts.append(f"[{t.site}]")
        return self.glue.join(parts)


class Epoch(Family):
    name = "epoch"

    def __init__(self, rng: random.Random, words: list[str], variables: Variables) -> None:
        super().__init__(rng, words, variables)
        self.millis = rng.random() < 0.5
        self.date_too = rng.random() < 0.5
        self.nodes = [
            rng.choice(
                (
                    f"R{rng.randrange(80):02d}-M{rng.randrange(2)}-N{rng.randrange(16)}",
                    f"node-{rng.randrange(1, 999)}",
                )
            )
            for _ in range(rng.randint(3, 30))
        ]

    def header(self, t: Template, i: int) -> str:
        s = self.clock.tick(self.rng)
        epoch = f"{self.clock.t:.3f}" if self.millis else str(int(self.clock.t))
        out = [epoch]
        if self.date_too:
            out.append(time.strftime("%Y.%m.%d", s))
        out.append(self.rng.choice(self.nodes))
        out.append(t.site.split(".")[0].upper())
        out.append(self.level(t.level))
        return " ".join(out)


class Short(Family):
    name = "short-date"

    def __init__(self, rng: random.Random, words: list[str], variables: Variables) -> None:
        super().__init__(rng, words, variables)
        self.style = rng.choice(("mmdd", "yymmdd"))
        self.tid = rng.random() < 0.5

    def header(self, t: Template, i: int) -> str:
        s = self.clock.tick(self.rng)
        if self.style == "mmdd":
            stamp = time.strftime("%m-%d %H:%M:%S", s) + f".{self.rng.randrange(1000):03d}"
            ids = f"{self.pid():>5}" + (f" {self.pid():>5}" if self.tid else "")
            return f"{stamp} {ids} {self.level(t.level)} {t.site.split('.')[-1].title()}:"
        stamp = time.strftime("%y/%m/%d %H:%M:%S", s)
        return f"{stamp} {self.level(t.level)} {t.site.split('.')[-1].title()}:"


class Counter(Family):
    name = "counter"

    def __init__(self, rng: random.Random, words: list[str], variables: Variables) -> None:
        super().__init__(rng, words, variables)
        self.start = rng.randrange(10**6)
        self.hash = rng.random() < 0.5

    def header(self, t: Template, i: int) -> str:
        s = self.clock.tick(self.rng)
        seq = f"#{self.start + i}" if self.hash else str(self.start + i)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", s) + _frac(self.rng, self.frac)
        return f"{seq} {stamp} {self.rng.choice(self.hosts)} {self.level(t.level)} {t.file_line}"


class RequestId(Family):
    name = "request-id"

    def __init__(self, rng: random.Random, words: list[str], variables: Variables) -> None:
        super().__init__(rng, words, variables)
        self.tenants = [_hexs(rng, 32) for _ in range(rng.randint(1, 5))]
        self.file_prefix = rng.random() < 0.3

    def header(self, t: Template, i: int) -> str:
        s = self.clock.tick(self.rng)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", s) + f".{self.rng.randrange(1000):03d}"
        if self.rng.random() < 0.8:
            req = f"[req-{_uuid(self.rng)} {self.rng.choice(self.tenants)} {self.rng.choice(self.tenants)} - - -]"
        else:
            req = "[-]"
        return f"{stamp} {self.pid()} {self.level(t.level)} {t.site} {req}"


class Glog(Family):
    name = "file-line"

    def header(self, t: Template, i: int) -> str:
        s = self.clock.tick(self.rng)
        letter = {"DEBUG": "I", "INFO": "I", "WARN": "W", "ERROR": "E"}[t.level]
        stamp = time.strftime("%m%d %H:%M:%S", s) + f".{self.rng.randrange(10**6):06d}"
        return f"{letter}{stamp} {self.pid():>7} {t.file_line}]"


class Pipe(Family):
    name = "no-level"

    def __init__(self, rng: random.Random, words: list[str], variables: Variables) -> None:
        super().__init__(rng, words, variables)
        self.pipe = rng.random() < 0.5

    def header(self, t: Template, i: int) -> str:
        s = self.clock.tick(self.rng)
        stamp = time.strftime("%Y%m%d-%H:%M:%S", s) + f":{self.rng.randrange(1000)}"
        if self.pipe:
            return f"{stamp}|{t.site.split('.')[-1]}|{self.pid()}|"
        return (
            f"{time.strftime('%d/%m/%Y %H:%M:%S', s)} {self.rng.choice(self.hosts)} {t.site.split('.')[-1]}:"
        )


# --- families added with issue 13.1: common format classes the ones above lack ------------------------


class DayBracketed(Family):
    """`[Sun Dec 04 04:47:44 2005] [error] [client 10.0.0.1] …`: a bracketed stamp with the day name, a
    bracketed lower-case level (with a module: `[core:error]`), a pid group, a client group on the
    templates that print one."""

    name = "day-bracketed"
    rich = True

    def __init__(self, rng: random.Random, words: list[str], variables: Variables) -> None:
        super().__init__(rng, words, variables)
        self.micro = rng.random() < 0.4
        self.modules = (
            [rng.choice(words[150:]) for _ in range(rng.randint(1, 5))] if rng.random() < 0.4 else []
        )
        self.pid_style = rng.choice(("", "", "pid", "pidtid"))
        self.client_share = rng.uniform(0.0, 0.7)

    def header(self, t: Template, i: int) -> str:
        s = self.clock.tick(self.rng)
        frac = f".{self.rng.randrange(10**6):06d}" if self.micro else ""
        stamp = f"[{DAYS[s.tm_wday]} {MONTHS[s.tm_mon - 1]} {s.tm_mday:02d} {time.strftime('%H:%M:%S', s)}{frac} {s.tm_year}]"
        level = {"INFO": "notice", "DEBUG": "debug", "WARN": "warn", "ERROR": "error"}[t.level]
        if self.modules:
            level = f"{self.modules[self.per_template(t, 'module') % len(self.modules)]}:{level}"
        parts = [stamp, f"[{level}]"]
        if self.pid_style == "pid":
            parts.append(f"[pid {self.pid()}]")
        elif self.pid_style == "pidtid":
            parts.append(f"[pid {self.pid()}:tid {self.rng.randrange(10**9, 10**10)}]")
        if self.per_template(t, "client") % 100 < self.client_share * 100:
            parts.append(f"[client {_ip(self.rng)}]")
        return " ".join(parts)


class Padded(Family):
    """`2016-09-28 04:30:30, Info                  CSI    …`: a stamp with a comma, then a level and a
    component each padded to a column width."""

    name = "padded-columns"
    rich = True

    def __init__(self, rng: random.Random, words: list[str], variables: Variables) -> None:
        super().__init__(rng, words, variables)
        self.level_width = rng.choice((8, 12, 22))
        self.components = [
            "".join(rng.choice("ABCDEFGHIJKLMNOPRSTUVWXY") for _ in range(rng.randint(2, 5)))
            for _ in range(rng.randint(1, 8))
        ]
        self.component_width = max(len(c) for c in self.components) + rng.randint(1, 4)
        self.stamp_glue = rng.choice((", ", " ", " | "))

    def header(self, t: Template, i: int) -> str:
        s = self.clock.tick(self.rng)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", s)
        level = {"INFO": "Info", "DEBUG": "Info", "WARN": "Warning", "ERROR": "Error"}[t.level]
        component = self.components[self.per_template(t, "component") % len(self.components)]
        return (
            f"{stamp}{self.stamp_glue}{level:<{self.level_width}}{component:<{self.component_width}}".rstrip()
        )


class DottedLogger(Family):
    """`17/06/09 20:10:40 INFO org.x.storage.BlockManager: …`: a two-digit-year slash date and the full
    dotted name of the logging class."""

    name = "dotted-logger"
    rich = True

    def __init__(self, rng: random.Random, words: list[str], variables: Variables) -> None:
        super().__init__(rng, words, variables)
        self.stamp = rng.choice(("%y/%m/%d %H:%M:%S", "%y/%m/%d %H:%M:%S", "%d/%m/%y %H:%M:%S"))
        self.root = (
            ".".join(rng.choice(("org", "com", "io", "net")) for _ in range(1))
            + "."
            + rng.choice(words[150:])
        )
        self.thread = rng.random() < 0.3
        self.level_style = rng.choice(("plain", "plain", "padded"))

    def header(self, t: Template, i: int) -> str:
        s = self.clock.tick(self.rng)
        level = t.level if self.level_style == "plain" else f"{t.level:<5}"
        parts = t.site.split(".")
        logger = ".".join((self.root, *parts[:-1], parts[-1].title()))
        thread = f" [{self.rng.choice(self.threads)}]" if self.thread else ""
        return f"{time.strftime(self.stamp, s)}{thread} {level} {logger}:"


class Logfmt(Family):
    """`time=… level=info msg="…" key=value …`, sometimes after a syslog or ISO prefix (a collector's),
    with fields the template fixes after the message."""

    name = "logfmt"
    rich = True

    def __init__(self, rng: random.Random, words: list[str], variables: Variables) -> None:
        super().__init__(rng, words, variables)
        self.time_key = rng.choice(("time", "ts", "t"))
        self.level_key = rng.choice(("level", "lvl"))
        self.msg_key = rng.choice(("msg", "msg", "message"))
        self.caller = rng.random() < 0.4
        self.prefix = rng.choice(("", "", "", "iso", "syslog"))
        self.extra: dict[Template, list[tuple[str, str]]] = {}
        self.fields = [rng.choice(words[:300]) for _ in range(12)]

    def header(self, t: Template, i: int) -> str:
        s = self.clock.tick(self.rng)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", s) + f".{self.rng.randrange(1000):03d}Z"
        out = []
        if self.prefix == "iso":
            out.append(time.strftime("%Y-%m-%dT%H:%M:%S", s) + "Z")
        elif self.prefix == "syslog":
            out.append(
                f"{MONTHS[s.tm_mon - 1]} {s.tm_mday:2d} {time.strftime('%H:%M:%S', s)} "
                f"{self.rng.choice(self.hosts)} {t.site.split('.')[-1].lower()}[{self.pid()}]:"
            )
        out.append(f"{self.time_key}={stamp}")
        out.append(f"{self.level_key}={t.level.lower()}")
        if self.caller:
            out.append(f"caller={t.file_line}")
        return " ".join(out)

    def compose(self, t: Template, i: int, message: str) -> tuple[str, str]:
        header = self.header(t, i)
        if t not in self.extra:
            slots = [self.variables.slot() for _ in range(self.rng.randint(0, 3))]
            names = self.rng.sample(self.fields, len(slots))
            self.extra[t] = list(zip(names, slots, strict=True))
        text = message.replace("\\", "\\\\").replace('"', '\\"')
        value = text if " " not in text and text and '"' not in text else f'"{text}"'
        pairs = [f"{self.msg_key}={value}"]
        for name, slot in self.extra[t]:
            v = self.variables.value(slot).replace('"', "'")
            pairs.append(f"{name}={v}" if " " not in v else f'{name}="{v}"')
        content = " ".join(pairs)
        return f"{header} {content}", content


class EpochSyslog(Family):
    """`- 1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 crond[2915]: …`: an alert flag, an epoch,
    a date and a node before a whole syslog header."""

    name = "epoch-syslog"
    rich = True

    def __init__(self, rng: random.Random, words: list[str], variables: Variables) -> None:
        super().__init__(rng, words, variables)
        self.nodes = [f"{_pseudo_word(rng)[:3]}{rng.randrange(1, 999)}" for _ in range(rng.randint(2, 40))]
        self.alerts = [
            "".join(rng.choice("ABCDEFGHIKLMNOPRSTU") for _ in range(rng.randint(3, 7))) for _ in range(3)
        ]
        self.source = rng.choice(("node/node", "node", "user@node"))

    def header(self, t: Template, i: int) -> str:
        s = self.clock.tick(self.rng)
        node = self.rng.choice(self.nodes)
        flag = "-"
        if t.level == "ERROR" and self.per_template(t, "alert") % 3 == 0:
            flag = self.alerts[self.per_template(t, "which") % len(self.alerts)]
        source = {
            "node/node": f"{node}/{node}",
            "node": node,
            "user@node": f"{self.rng.choice(('root', 'admin'))}@{node}",
        }[self.source]
        prog = t.site.split(".")[-1].lower()
        pid = f"[{self.pid()}]" if self.per_template(t, "pid") % 4 else ""
        syslog = f"{MONTHS[s.tm_mon - 1]} {s.tm_mday:2d} {time.strftime('%H:%M:%S', s)}"
        return (
            f"{flag} {int(self.clock.t)} {time.strftime('%Y.%m.%d', s)} {node} {syslog} {source} {prog}{pid}:"
        )


FAMILIES: tuple[type[Family], ...] = (
    Iso,
    Syslog,
    Bracketed,
    Epoch,
    Short,
    Counter,
    RequestId,
    Glog,
    Pipe,
    DayBracketed,
    Padded,
    DottedLogger,
    Logfmt,
    EpochSyslog,
)
FAMILY_NAMES = tuple(f.name for f in FAMILIES)
OLDER_FAMILIES = FAMILY_NAMES[:9]  # the proxy before issue 13.1


@dataclass(frozen=True, slots=True)
class FuzzLog:
    family: str
    seed: int
    lines: tuple[str, ...]
    messages: tuple[str, ...]  # each line without its header (what drain3 is fed)
    truth: tuple[int, ...]  # each line's template


def generate(family: str, seed: int, lines: int = LINES) -> FuzzLog:
    rng = random.Random(f"fuzz-{family}-{seed}")
    words = vocabulary(rng)
    rng.shuffle(words_tail := words[len(_COMMON) :])
    words = words[: len(_COMMON)] + words_tail
    variables = Variables(rng, words)
    kind = next(f for f in FAMILIES if f.name == family)
    if kind.rich:
        variables.kinds = variables.rich_kinds
    pool = templates(rng, words, variables, rng.randint(20, 90))
    framer = kind(rng, words, variables)
    weights = [1.0 / (rank + 1) ** rng.uniform(0.9, 1.4) for rank in range(len(pool))]
    rng.shuffle(weights)
    out: list[str] = []
    messages: list[str] = []
    truth: list[int] = []
    for i in range(lines):
        k = rng.choices(range(len(pool)), weights)[0]
        line, content = framer.compose(pool[k], i, pool[k].render(variables))
        out.append(line)
        messages.append(content)
        truth.append(k)
    return FuzzLog(family, seed, tuple(out), tuple(messages), tuple(truth))


def healbot_ga(log: FuzzLog, tmp: Path) -> float:
    """GA of `healbot scan --all`'s grouping (scan_file, shipped defaults) on the raw lines."""
    path = tmp / f"{log.family}-{log.seed}.log"
    path.write_text("\n".join(log.lines) + "\n", encoding="utf-8")
    result = scan_file(path, errors_only=False)
    by_line = dict(result.line_groups)
    return grouping_accuracy(
        [by_line.get(n, f"missing-{n}") for n in range(1, len(log.lines) + 1)], log.truth
    )


def drain3_ga(log: FuzzLog) -> float | None:
    miner = drain3_miner()
    if miner is None:
        return None
    return grouping_accuracy([int(miner.add_log_message(m)["cluster_id"]) for m in log.messages], log.truth)


@dataclass(frozen=True, slots=True)
class FuzzScores:
    healbot: dict[tuple[str, int], float]
    drain3: dict[tuple[str, int], float | None]

    def average(
        self, seeds: range, families: tuple[str, ...] = FAMILY_NAMES, *, drain3: bool = False
    ) -> float | None:
        table = self.drain3 if drain3 else self.healbot
        values = [v for (f, s), v in table.items() if s in seeds and f in families]
        if not values or any(v is None for v in values):
            return None
        return sum(v or 0.0 for v in values) / len(values)


def score_all(tmp: Path, seeds: range | list[int], families: tuple[str, ...] = FAMILY_NAMES) -> FuzzScores:
    ours: dict[tuple[str, int], float] = {}
    theirs: dict[tuple[str, int], float | None] = {}
    for family in families:
        for seed in seeds:
            log = generate(family, seed)
            ours[(family, seed)] = healbot_ga(log, tmp)
            theirs[(family, seed)] = drain3_ga(log)
    return FuzzScores(ours, theirs)


def _fmt(value: float | None) -> str:
    return f"{value:6.3f}" if value is not None else f"{'n/a':>6}"


def run(tmp: Path) -> FuzzScores:
    seeds = [*TUNING_SEEDS, *REPORT_SEEDS]
    print("grouping accuracy (GA) on held-out-style logs: random formats, random templates, shipped defaults")
    print(
        f"  random formats and templates (tests/bench/fuzz_formats.py, {LINES} lines a file): tuning seeds "
        f"{TUNING_SEEDS.start}-{TUNING_SEEDS.stop - 1}, report seeds {REPORT_SEEDS.start}-{REPORT_SEEDS.stop - 1} "
        "(only scored)"
    )
    started = time.perf_counter()
    scores = score_all(tmp, seeds)
    print(
        f"  {'family':14} {'tuning':>6} {'report':>6} {'gap':>6}  {'drain3':>6} {'drain3':>6}  worst report seed"
    )
    print(f"  {'':14} {'':>6} {'':>6} {'':>6}  {'tuning':>6} {'report':>6}")
    rows: list[tuple[str, tuple[str, ...]]] = [(f, (f,)) for f in FAMILY_NAMES]
    rows += [("average", FAMILY_NAMES), ("older nine", OLDER_FAMILIES)]
    for label, families in rows:
        tune = scores.average(TUNING_SEEDS, families)
        report = scores.average(REPORT_SEEDS, families)
        gap = tune - report if tune is not None and report is not None else None
        d3_tune = scores.average(TUNING_SEEDS, families, drain3=True)
        d3_report = scores.average(REPORT_SEEDS, families, drain3=True)
        worst = min((v, f, s) for (f, s), v in scores.healbot.items() if s in REPORT_SEEDS and f in families)
        tail = (
            f"{worst[2]}: {worst[0]:.3f}" if len(families) == 1 else f"{worst[1]} {worst[2]}: {worst[0]:.3f}"
        )
        print(
            f"  {label:14} {_fmt(tune)} {_fmt(report)} {_fmt(gap)}  {_fmt(d3_tune)} {_fmt(d3_report)}  {tail}"
        )
    print(
        f"  ({time.perf_counter() - started:.1f} s; drain3 fed each message with the known header stripped)"
    )
    return scores


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp_dir:
        run(Path(tmp_dir))
