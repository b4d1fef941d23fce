"""The chat transcript of a Telegram demo run, read from the fake Bot API: as console text, or as one
self-contained HTML page that looks like the chat (bubbles, inline buttons, edits, the diff document).

The page loads nothing: styles are inline, there are no scripts, images or links, and the bot's HTML is
rebuilt from Telegram's tag subset without any attribute, so a card cannot smuggle a URL into the page.
"""

from __future__ import annotations

import difflib
import enum
import html
import html.parser
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bot.demo.fake_bot_api import Call, FakeBotApi, UserAction

_SAFE_TAGS = {"b", "strong", "i", "em", "u", "s", "del", "code", "pre", "blockquote"}
_TAG_ALIASES = {"ins": "u", "strike": "s"}
_OUTCOME_LINE = re.compile(r"^(→ )(kept|worse|reverted)\b.*$", re.MULTILINE)
_OUTCOME_CSS = {"kept": "good", "worse": "bad", "reverted": "bad"}
_OUTCOME_CLASS = {"kept": ' class="kept"', "reverted": ' class="reverted"'}


class EventKind(enum.Enum):
    SENT = "sent"
    DOCUMENT = "document"
    EDITED = "edited"
    BUTTONS_CHANGED = "buttons changed"
    PRESSED = "pressed"
    ANSWERED = "answered"
    USER_MESSAGE = "user message"


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    content: bytes


@dataclass(frozen=True, slots=True)
class ChatEvent:
    """One thing that happened in the chat, in the order it happened."""

    at: float
    kind: EventKind
    message_id: int
    who: str
    text: str = ""  # plain text (what the phone shows), the pressed label, or the press's answer
    markup_html: str = ""  # the bot's HTML source for sends and edits
    buttons: tuple[tuple[str, ...], ...] = ()
    attachment: Attachment | None = None


@dataclass(frozen=True, slots=True)
class Bubble:
    """A message as it looks at the end: its final text, and what happened to it on the way."""

    message_id: int
    from_bot: bool
    who: str
    sent_at: float
    markup_html: str
    text: str
    first_buttons: tuple[tuple[str, ...], ...]
    buttons_now: tuple[tuple[str, ...], ...]
    edits: int = 0
    edited_at: float | None = None
    pressed: tuple[tuple[str, str], ...] = ()  # (label, who) in order
    answers: tuple[str, ...] = ()
    attachment: Attachment | None = None


@dataclass(frozen=True, slots=True)
class Transcript:
    chat_title: str
    events: tuple[ChatEvent, ...]
    people: Mapping[int, str] = field(default_factory=dict)

    def bubbles(self) -> list[Bubble]:
        return final_bubbles(self.events)


def _rows(markup: object) -> tuple[tuple[str, ...], ...]:
    if isinstance(markup, str):
        markup = json.loads(markup) if markup else None
    if not isinstance(markup, dict):
        return ()
    return tuple(
        tuple(str(button.get("text", "")) for button in row) for row in markup.get("inline_keyboard", [])
    )


def _result(call: Call) -> Mapping[str, Any]:
    return call.result if isinstance(call.result, dict) else {}


def events_from(
    journal: Iterable[Call], actions: Iterable[UserAction], chat_id: int, people: Mapping[int, str]
) -> tuple[ChatEvent, ...]:
    """The chat's events from the fake's journal (what the bot did) and its user actions (what people did)."""
    chat = str(chat_id)
    presses = {a.query_id: a for a in actions if a.query_id is not None}
    events: list[ChatEvent] = []
    for call in journal:
        if not call.ok:
            continue
        result = _result(call)
        if call.method == "answerCallbackQuery":
            press = presses.get(str(call.params.get("callback_query_id", "")))
            if press is not None and press.chat_id == chat_id and call.params.get("text"):
                text = str(call.params["text"])
                events.append(ChatEvent(call.at, EventKind.ANSWERED, press.message_id, "healbot", text))
            continue
        if call.chat_id != chat:
            continue
        message_id = int(result.get("message_id", call.params.get("message_id", 0)) or 0)
        buttons = _rows(result.get("reply_markup"))
        if call.method == "sendMessage":
            raw = str(call.params.get("text", ""))
            events.append(
                ChatEvent(
                    call.at, EventKind.SENT, message_id, "healbot", str(result.get("text", "")), raw, buttons
                )
            )
        elif call.method == "editMessageText":
            raw = str(call.params.get("text", ""))
            events.append(
                ChatEvent(
                    call.at,
                    EventKind.EDITED,
                    message_id,
                    "healbot",
                    str(result.get("text", "")),
                    raw,
                    buttons,
                )
            )
        elif call.method == "editMessageReplyMarkup":
            events.append(
                ChatEvent(call.at, EventKind.BUTTONS_CHANGED, message_id, "healbot", buttons=buttons)
            )
        elif call.method == "sendDocument":
            document = result.get("document") or {}
            attachment = Attachment(
                str(document.get("file_name", "document")), call.files.get("document", b"")
            )
            events.append(
                ChatEvent(
                    call.at,
                    EventKind.DOCUMENT,
                    message_id,
                    "healbot",
                    str(result.get("caption", "")),
                    str(call.params.get("caption", "")),
                    buttons,
                    attachment,
                )
            )
    for action in actions:
        if action.chat_id != chat_id:
            continue
        who = people.get(action.user_id, f"user {action.user_id}")
        kind = EventKind.PRESSED if action.query_id is not None else EventKind.USER_MESSAGE
        events.append(ChatEvent(action.at, kind, action.message_id, who, action.text))
    return tuple(sorted(events, key=lambda e: e.at))


def transcript_from(
    api: FakeBotApi, chat_id: int, *, chat_title: str, people: Mapping[int, str]
) -> Transcript:
    return Transcript(
        chat_title, events_from(api.journal(), api.user_actions(), chat_id, people), dict(people)
    )


def final_bubbles(events: Iterable[ChatEvent]) -> list[Bubble]:
    bubbles: dict[int, Bubble] = {}
    for e in events:
        bubble = bubbles.get(e.message_id)
        if e.kind in (EventKind.SENT, EventKind.DOCUMENT):
            bubbles[e.message_id] = Bubble(
                e.message_id,
                True,
                e.who,
                e.at,
                e.markup_html,
                e.text,
                e.buttons,
                e.buttons,
                attachment=e.attachment,
            )
        elif e.kind is EventKind.USER_MESSAGE:
            bubbles[e.message_id] = Bubble(
                e.message_id, False, e.who, e.at, html.escape(e.text), e.text, (), ()
            )
        elif bubble is None:
            continue
        elif e.kind is EventKind.EDITED:
            bubbles[e.message_id] = replace(
                bubble,
                markup_html=e.markup_html,
                text=e.text,
                buttons_now=e.buttons,
                edits=bubble.edits + 1,
                edited_at=e.at,
            )
        elif e.kind is EventKind.BUTTONS_CHANGED:
            bubbles[e.message_id] = replace(
                bubble, buttons_now=e.buttons, edits=bubble.edits + 1, edited_at=e.at
            )
        elif e.kind is EventKind.PRESSED:
            bubbles[e.message_id] = replace(bubble, pressed=(*bubble.pressed, (e.text, e.who)))
        elif e.kind is EventKind.ANSWERED:
            bubbles[e.message_id] = replace(bubble, answers=(*bubble.answers, e.text))
    return [bubbles[k] for k in sorted(bubbles)]


# --- console ---------------------------------------------------------------------------------------


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


def _indent(text: str, prefix: str = "    │ ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _keyboard_text(rows: Sequence[Sequence[str]]) -> str:
    return "\n".join("    " + " ".join(f"[ {label} ]" for label in row) for row in rows)


def render_text(transcript: Transcript) -> str:
    """The chat as a newcomer reads it in a terminal: each send in full, each edit as the lines it added."""
    shown: dict[int, ChatEvent] = {}
    out = [f"--- Telegram chat {transcript.chat_title!r} (the fake Bot API's journal) ---"]
    for e in transcript.events:
        stamp = _clock(e.at)
        if e.kind is EventKind.SENT:
            out.append(f"{stamp} healbot → message {e.message_id}")
            out.append(_indent(e.text))
            if e.buttons:
                out.append(_keyboard_text(e.buttons))
        elif e.kind is EventKind.DOCUMENT:
            assert e.attachment is not None
            size = len(e.attachment.content)
            out.append(f"{stamp} healbot → message {e.message_id}: 📎 {e.attachment.filename} ({size} bytes)")
            if e.text:
                out.append(_indent(e.text))
            out.append(_indent(e.attachment.content.decode("utf-8", "replace"), "    ┆ "))
        elif e.kind is EventKind.EDITED:
            before = shown.get(e.message_id)
            added = _added_lines(before.text if before else "", e.text)
            out.append(f"{stamp} healbot ✎ edited message {e.message_id}")
            if added:
                out.append(_indent("\n".join(added), "    + "))
            if before is not None and before.buttons and not e.buttons:
                out.append("    (buttons removed)")
        elif e.kind is EventKind.BUTTONS_CHANGED:
            out.append(f"{stamp} healbot ✎ changed the buttons of message {e.message_id}")
            out.append(_keyboard_text(e.buttons) if e.buttons else "    (buttons removed)")
        elif e.kind is EventKind.PRESSED:
            out.append(f"{stamp} {e.who} 👆 pressed [ {e.text} ] on message {e.message_id}")
        elif e.kind is EventKind.ANSWERED:
            out.append(f"{stamp} healbot answers the press: “{e.text}”")
        elif e.kind is EventKind.USER_MESSAGE:
            out.append(f"{stamp} {e.who} → message {e.message_id}")
            out.append(_indent(e.text))
        if e.kind in (EventKind.SENT, EventKind.EDITED, EventKind.DOCUMENT):
            shown[e.message_id] = e
    return "\n".join(out)


def _added_lines(before: str, after: str) -> list[str]:
    return [
        line[2:] for line in difflib.ndiff(before.splitlines(), after.splitlines()) if line.startswith("+ ")
    ]


# --- HTML ------------------------------------------------------------------------------------------


class _SafeHtml(html.parser.HTMLParser):
    """Telegram's HTML subset rebuilt without attributes; unknown tags keep only their text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = _TAG_ALIASES.get(tag, tag)
        if tag in _SAFE_TAGS:
            self.out.append(f"<{tag}>")

    def handle_endtag(self, tag: str) -> None:
        tag = _TAG_ALIASES.get(tag, tag)
        if tag in _SAFE_TAGS:
            self.out.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        self.out.append(html.escape(data, quote=False))


def safe_html(telegram_html: str) -> str:
    parser = _SafeHtml()
    parser.feed(telegram_html)
    parser.close()
    return "".join(parser.out)


def _chat_text(telegram_html: str) -> str:
    """The bot's text as the phone lays it out: blocks without blank lines around them, outcomes coloured."""
    text = re.sub(r"\n?<pre>", "<pre>", safe_html(telegram_html))
    text = re.sub(r"</pre>\n?", "</pre>", text)
    return _OUTCOME_LINE.sub(lambda m: f'<span class="{_OUTCOME_CSS[m.group(2)]}">{m.group(0)}</span>', text)


def _diff_html(content: str) -> str:
    lines = []
    for line in content.splitlines():
        css = ""
        if line.startswith("+") and not line.startswith("+++"):
            css = "add"
        elif line.startswith("-") and not line.startswith("---"):
            css = "del"
        elif line.startswith("@@"):
            css = "hunk"
        elif line.startswith("#"):
            css = "note"
        escaped = html.escape(line, quote=False) or " "
        lines.append(f'<span class="{css}">{escaped}</span>' if css else escaped)
    return "\n".join(lines)


def _keyboard_html(bubble: Bubble) -> str:
    if not bubble.first_buttons:
        return ""
    pressed = {label for label, _ in bubble.pressed}
    gone = not bubble.buttons_now
    rows = []
    for row in bubble.first_buttons:
        cells = []
        for label in row:
            css = "btn pressed" if label in pressed else "btn"
            mark = "✓ " if label in pressed else ""
            cells.append(f'<span class="{css}">{mark}{html.escape(label)}</span>')
        rows.append(f'<div class="kbrow">{"".join(cells)}</div>')
    note = '<div class="kbnote">buttons removed after the decision</div>' if gone else ""
    return f'<div class="keyboard{" gone" if gone else ""}">{"".join(rows)}{note}</div>'


def _bubble_html(bubble: Bubble) -> str:
    meta = _clock(bubble.sent_at)
    if bubble.edits:
        edited_at = _clock(bubble.edited_at) if bubble.edited_at else meta
        times = f" ×{bubble.edits}" if bubble.edits > 1 else ""
        meta = f'<span class="edited">edited{times} {edited_at}</span> · sent {meta}'
    body = f'<div class="text">{_chat_text(bubble.markup_html)}</div>' if bubble.markup_html else ""
    if bubble.attachment is not None:
        content = bubble.attachment.content.decode("utf-8", "replace")
        size = len(bubble.attachment.content)
        body = (
            f'<div class="doc"><div class="docicon">DIFF</div><div><div class="docname">'
            f'{html.escape(bubble.attachment.filename)}</div><div class="docsize">{size} bytes</div></div></div>'
            f'<details class="doccontent"><summary>show the diff</summary><pre class="diff">'
            f"{_diff_html(content)}</pre></details>{body}"
        )
    side = "bot" if bubble.from_bot else "me"
    parts = [
        f'<div class="row {side}"><div class="bubble {side}" id="m{bubble.message_id}">',
        f'<div class="who">{html.escape(bubble.who)}</div>' if bubble.from_bot else "",
        body,
        f'<div class="meta">{meta}</div></div></div>',
        _keyboard_html(bubble),
    ]
    for label, who in bubble.pressed:
        parts.append(
            f'<div class="row me"><div class="press">{html.escape(who)} pressed '
            f"<b>{html.escape(label)}</b></div></div>"
        )
    for answer in bubble.answers:
        parts.append(f'<div class="toast">{html.escape(answer)}</div>')
    return "".join(parts)


_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#0e1621;font:15px/1.4 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
color:#e9edf1}
.top{position:sticky;top:0;background:#17212b;padding:12px 18px;border-bottom:1px solid #0b1118;display:flex;
gap:12px;align-items:center;z-index:1}
.avatar{width:42px;height:42px;border-radius:50%;background:linear-gradient(135deg,#4fae4e,#2a9ef1);
display:flex;align-items:center;justify-content:center;font-weight:700;font-size:18px;color:#fff}
.title{font-weight:600;font-size:16px}.sub{color:#7f91a4;font-size:13px}
.chat{max-width:760px;margin:0 auto;padding:16px 14px 28px}
.intro{color:#9fb0c2;font-size:13px;background:#1b2836;border-radius:12px;padding:10px 14px;margin:4px 0 14px}
.row{display:flex;margin:6px 0}.row.me{justify-content:flex-end}
.bubble{max-width:92%;padding:8px 12px 6px;border-radius:14px;box-shadow:0 1px 1px rgba(0,0,0,.3)}
.bubble.bot{background:#182533;border-bottom-left-radius:4px}
.bubble.me{background:#2b5278;border-bottom-right-radius:4px}
.who{color:#63b3ed;font-weight:600;font-size:13px;margin-bottom:2px}
.text{white-space:pre-wrap;word-wrap:break-word}
.text pre,.text code{font-family:"SF Mono",Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12.5px}
.text pre{background:#0f1a25;border-radius:8px;padding:7px 9px;margin:4px 0;white-space:pre-wrap;
color:#c7d6e4}
.text code{background:#0f1a25;border-radius:4px;padding:0 4px;color:#f0b46c}
.meta{text-align:right;color:#6d7f8f;font-size:11.5px;margin-top:3px}
.edited{color:#8fb8de;font-style:italic}
.text .good{color:#7ee787;font-weight:600}.text .bad{color:#ffb86c;font-weight:600}
.keyboard{max-width:92%;margin:2px 0 8px}.keyboard.gone .btn{opacity:.45}
.kbrow{display:flex;gap:4px;margin-top:4px}
.btn{flex:1;text-align:center;background:#223446;border-radius:8px;padding:7px 6px;font-size:13.5px;
font-weight:500;color:#d6e6f5}
.keyboard.gone .btn.pressed,.btn.pressed{opacity:1;background:#3a8a4f;color:#fff}
.kbnote{color:#6d7f8f;font-size:11.5px;margin-top:3px}
.press{background:#2b5278;border-radius:14px;border-bottom-right-radius:4px;padding:6px 12px;font-size:13.5px}
.toast{margin:4px auto 10px;width:fit-content;max-width:80%;background:rgba(0,0,0,.45);color:#dfe7ee;
border-radius:12px;padding:5px 12px;font-size:12.5px;text-align:center}
.doc{display:flex;gap:10px;align-items:center;margin:2px 0 4px}
.docicon{width:44px;height:44px;border-radius:50%;background:#2a9ef1;color:#fff;display:flex;align-items:center;
justify-content:center;font-size:10.5px;font-weight:700}
.docname{font-weight:600}.docsize{color:#7f91a4;font-size:12.5px}
details.doccontent summary{cursor:pointer;color:#63b3ed;font-size:13px;margin:2px 0}
pre.diff{background:#0f1a25;border-radius:8px;padding:8px 10px;font:12px/1.45 Menlo,Consolas,"DejaVu Sans Mono",
monospace;white-space:pre-wrap;color:#c7d6e4;margin:4px 0}
.diff .add{color:#7ee787;background:rgba(46,160,67,.15)}.diff .del{color:#ff8c8c;background:rgba(248,81,73,.15)}
.diff .hunk{color:#a5b4fc}.diff .note{color:#7f91a4}
.summary{margin:18px 0 0;background:#17212b;border-radius:12px;padding:10px 14px}
.summary h2{font-size:14px;margin:0 0 6px;color:#9fb0c2;font-weight:600}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 6px}
th{color:#7f91a4;font-weight:500;border-bottom:1px solid #26384a}
td.kept{color:#7ee787;font-weight:600}td.reverted{color:#ffb86c;font-weight:600}
"""


def render_html(
    transcript: Transcript,
    *,
    subtitle: str = "",
    intro: str = "",
    summary: Sequence[Sequence[str]] = (),
) -> str:
    """One page, no external resources. `summary` is a table: a header row, then one row per scenario."""
    bubbles = "".join(_bubble_html(b) for b in transcript.bubbles())
    table = ""
    if summary:
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in summary[0])
        body = "".join(
            "<tr>" + "".join(f"<td{_OUTCOME_CLASS.get(c, '')}>{html.escape(c)}</td>" for c in row) + "</tr>"
            for row in summary[1:]
        )
        table = f'<div class="summary"><h2>outcome</h2><table><tr>{head}</tr>{body}</table></div>'
    intro_html = f'<div class="intro">{html.escape(intro)}</div>' if intro else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(transcript.chat_title)} · healbot demo</title><style>{_CSS}</style></head><body>"
        f'<div class="top"><div class="avatar">hb</div><div><div class="title">'
        f'{html.escape(transcript.chat_title)}</div><div class="sub">{html.escape(subtitle)}</div></div></div>'
        f'<div class="chat">{intro_html}{bubbles}{table}</div></body></html>\n'
    )


def write_html(path: Path, page: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
