"""Header stripping and token masks: what is left of a log line once the parts that vary are gone.

Header stripping needs no per-file configuration. A line's level is the first level word (INFO, ERROR,
…) among its first tokens when only header-looking text (with a digit in it: a timestamp, a pid) or
nothing comes before it; the header is everything up to the level, plus what usually follows a level
(`[thread]` groups, ` - `, a dotted logger name or `name[pid]:`). Without a level word, leading
timestamps in common formats, syslog's `Mon dd hh:mm:ss host prog[pid]:` and bracketed stamps are
stripped. Per-line process manager prefixes (PM2) go first. Headers of other shapes are learned per file
from its first lines (bot.header_infer), not written here.

Masks (after Sentry's parameterisation) replace, in one left-to-right pass: HTTP request lines (the
route is kept with its ids masked), URLs, e-mail addresses, host names
(with a generic top-level domain, or ending in a two-letter country code that is no file extension,
or any dotted name or name with a digit followed by a port: `csdnimg.cn:80`, `db-3:5432`; a source
file's `Foo.java:42` is not one), dates with month names, lists of numbers (one value, whatever their
count), MAC addresses, the anonymous tokens redaction left (`[REDACTED:hex_token]`), UUIDs, IPv4/IPv6
addresses (with a port), file paths of two or more segments (a Windows path of one: `D:\\x.dll`), quoted
values (not JSON keys), hex (0x…, or 7+ hex digits with a letter and a digit: a short git hash too),
durations, sizes, booleans as the value of a key (`"ok": true`, `ok=false`) and any other number, also
inside words (`blk_<num>`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.records import strip_line_prefix

# Severity of level words, as logging libraries and syslog spell them.
LEVELS: dict[str, int] = {
    "TRACE": 5,
    "DEBUG": 10,
    "INFO": 20,
    "NOTICE": 25,
    "WARN": 30,
    "WARNING": 30,
    "ERROR": 40,
    "ERR": 40,
    "SEVERE": 40,
    "CRITICAL": 50,
    "CRIT": 50,
    "FATAL": 50,
    "ALERT": 50,
    "EMERG": 50,
    "EMERGENCY": 50,
    "PANIC": 50,
}
ERROR_SEVERITY = 40
_LEVEL_SEARCH_CHARS = 200
_LEVEL_MAX_TOKEN = 10

_LEVEL = re.compile(
    r"(?<![\w-])[\[<(]?(?P<level>"
    + "|".join(sorted(LEVELS, key=len, reverse=True))
    + r")[\]>)]?(?=[\s:|,]|$)"
)
_TIMESTAMP = (
    r"\d{4}[-/.]?\d\d[-/.]?\d\d(?:[T _-]|-)\d{1,2}[:.]\d{1,2}[:.]\d{1,2}(?:[.,:]\d+)?(?:Z| ?[+-]\d\d:?\d\d)?"
    r"|\d\d/[A-Z][a-z]{2}/\d{4}[: ]\d\d:\d\d:\d\d(?: [+-]\d{4})?"
)
_SYSLOG_STAMP = r"[A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d"
_BRACKETS = r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]"
_AFTER_LEVEL = re.compile(
    r"^(?:\s+|:[\w.]+:|[:|,-](?=\s)|"
    + _BRACKETS
    + r"|[\w$.-]+\[\d+\]:(?=\s|$)|(?:[\w$-]+\.)+[\w$-]+:(?=\s|$))"
)
_LEADING = re.compile(
    r"^(?:\s+|[-|](?=\s)|(?:" + _TIMESTAMP + r"):?"
    r"|" + _SYSLOG_STAMP + r"(?: \S+ [^\s:\[]+(?:\[\d+\])?:(?=\s|$))?"
    r"|\[[^\]\d]{0,40}\d[^\]]{0,40}\]:?"
    r"|[\w$.-]+\[\d+\]:(?=\s|$))"
)


@dataclass(frozen=True, slots=True)
class Header:
    level: str | None  # upper-cased level word, None when the line has none
    message: str  # the line without its header

    @property
    def severity(self) -> int | None:
        return LEVELS[self.level] if self.level is not None else None


def strip_header(line: str) -> Header:
    text = strip_line_prefix(line)
    match = _LEVEL.search(text, 0, _LEVEL_SEARCH_CHARS)
    if match is not None:
        before = text[: match.start()]
        if (not before.strip() or any(c.isdigit() for c in before)) and len(
            before.split()
        ) <= _LEVEL_MAX_TOKEN:
            return Header(match.group("level"), _strip_repeated(_AFTER_LEVEL, text[match.end() :]))
    return Header(None, _strip_repeated(_LEADING, text))


def strip_leading(text: str) -> str:
    """`text` without leading stamps, bracketed stamps and `name[pid]:` (what a header without a level
    word is stripped of)."""
    return _strip_repeated(_LEADING, text)


def strip_after_level(text: str) -> str:
    """`text`, which followed a level word, without what usually comes between a level and the message:
    `[thread]` groups, ` - `, a dotted logger name or `name[pid]:`."""
    return _strip_repeated(_AFTER_LEVEL, text)


def _strip_repeated(pattern: re.Pattern[str], text: str, limit: int = 12) -> str:
    for _ in range(limit):
        match = pattern.match(text)
        if match is None or not match.group(0):
            break
        text = text[match.end() :]
    return text.strip()


# --- token masks ------------------------------------------------------------------------------------

_HTTP_METHODS = r"GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS|CONNECT|TRACE"
_IPV4 = r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?(?!\.?\d)"
_H = r"[0-9a-fA-F]{1,4}"
_IPV6 = rf"(?<![\w:])(?:(?:{_H}:){{7}}{_H}(?::\d{{1,5}})?|(?:{_H}:){{0,6}}(?:{_H})?::(?:{_H}:){{0,6}}(?:{_H})?)(?![\w:])"
# `name:port` is an address whatever the name's domain: dotted (`cdn.example.cn:80`), or one label with a
# digit (`db-3:5432`) or `localhost`; a source file's `name.ext:line` is a code site, not an address.
_SOURCE_EXT = (
    r"py|pyx|java|kt|kts|scala|groovy|go|c|h|cc|cpp|cxx|hpp|hh|cs|js|jsx|mjs|ts|tsx|rb|rs|php|swift|m|mm"
    r"|lua|ex|exs|erl|clj|dart|vue|pl|pm|sh"
)
_HOST_PORT = (
    r"(?:(?![\w.-]*\.(?:" + _SOURCE_EXT + r"):)(?=[\w.-]*[A-Za-z])[A-Za-z0-9][\w-]*(?:\.[A-Za-z0-9][\w-]*)+"
    r"|[A-Za-z][A-Za-z-]*\d[\w-]*|localhost):\d{1,5}(?![\w.:])"
)
# `name.cc` with a country-code top-level domain (`example.de`), unless `cc` is a file's extension
_FILE_EXT = _SOURCE_EXT + r"|md|gz|xz|bz|so|db|js|ts|ps|el|in|am|mk|ac|hs|ml|vb|gp|ko|ok"
_TWO_LABEL_HOST = r"[A-Za-z][\w-]*\.(?!(?:" + _FILE_EXT + r")(?![\w.-]))[a-z]{2}(?![\w.-]|:\d)"
_MAC = r"\b[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}\b|\b[0-9a-fA-F]{2}(?:-[0-9a-fA-F]{2}){5}\b"
_MASK = re.compile(
    r"(?P<request>(?<!\w)\"?\b(?:" + _HTTP_METHODS + r") (?P<route>/[^\s\"]*) HTTP/\d(?:\.\d)?\"?)"
    r"|(?P<url>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+)"
    r"|(?P<datetime>\b(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*,? )?(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r"[a-z]* +\d{1,2},? \d\d:\d\d:\d\d(?: \d{4})?\b)"
    r"|(?P<host>\b(?:[A-Za-z0-9-]+\.)+(?:com|net|org|edu|gov|mil|io|info|biz|local|localdomain|lan"
    r"|internal|arpa)(?::\d{1,5})?(?![\w.-])|\b(?:[A-Za-z0-9-]+\.){2,}[a-z]{2}(?::\d{1,5})?(?![\w.-])"
    r"|(?<![\w.:/@-])(?=[\w-]+[.:]\w)(?:" + _HOST_PORT + "|" + _TWO_LABEL_HOST + r"))"
    r"|(?P<email>\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b)"
    r"|(?P<numbers>\[-?\d+(?:\.\d+)?(?:, ?-?\d+(?:\.\d+)?)+\])"
    r"|(?P<mac>" + _MAC + r")"
    r"|(?P<token>\[REDACTED:(?:hex_token|high_entropy)\])"
    r"|(?P<uuid>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)"
    r"|(?P<ip>" + _IPV4 + "|" + _IPV6 + r")"
    r"|(?P<path>(?<![\w/.:-])(?:~|\.{1,2})?(?:/[\w.@%+~$-]+){2,}/?|\b[A-Za-z]:\\[^\\\s\"']*(?:\\[^\\\s\"']+)*\\?)"
    r"|(?P<quoted>(?<!\w)\"(?:[^\"\\\n]|\\.){0,200}\"|(?<!\w)'(?:[^'\\\n]|\\.){0,200}'(?!\w))"
    r"|(?P<hex>\b0[xX][0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{7,}\b)"
    r"|(?P<duration>(?<![\w.])\d+(?:\.\d+)?\s?(?:ns|us|µs|ms|s|secs?|seconds?|mins?|minutes?|hours?|days?)\b)"
    r"|(?P<size>(?<![\w.])\d+(?:\.\d+)?\s?(?:[KMGTP]i?B|[kmgt]b|bytes?|B)\b)"
    r"|(?P<bool>(?:(?<=\": )|(?<=\":)|(?<==))(?:true|false|null|True|False|None)\b)"
    r"|(?P<num>(?:(?<![A-Za-z0-9])-)?\d+(?:\.\d+)*)"
)
_ROUTE_ID = re.compile(r"(?<=/)[^/?#]*\d[^/?#]*")
_JSON_KEY_AFTER = re.compile(r"\s*:")


def _mask_match(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "route":  # lastgroup is the innermost closed group for a request line
        kind = "request"
    if kind == "request":
        quote = '"' if match.group(0).startswith('"') else ""
        method = match.group(0).lstrip('"').split(" ", 1)[0]
        route = match.group("route").split("?", 1)[0]
        query = "?<query>" if "?" in match.group("route") else ""
        return f"{quote}{method} {_ROUTE_ID.sub('<id>', route)}{query} HTTP{quote}"
    if kind == "numbers":
        return "[<num>]"  # a list of any length is one value
    if kind == "quoted":
        text = match.group(0)
        if _JSON_KEY_AFTER.match(match.string, match.end()):
            return text  # a JSON key names a field; it is not a value
        return f"{text[0]}<str>{text[0]}"
    return f"<{kind}>"


def mask(text: str) -> str:
    """Replace the variable tokens of `text` by placeholders such as `<num>`, `<ip>`, `<path>`."""
    return _MASK.sub(_mask_match, text)


def masked_message(line: str, limit: int = 300) -> str:
    """The line's message without its header, masked and capped: what groups equal lines together."""
    masked = mask(strip_header(line).message)
    return masked if len(masked) <= limit else masked[: limit - 1] + "…"
