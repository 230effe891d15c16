"""Structured logs: one JSON object per line on stderr (SPEC §7), or `key=value` text for humans."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .errors import Issue

LOGGER = logging.getLogger("sidecar")
DN_LOG_LIMIT = 1024  # characters of a DN in a log line; a certificate can carry far longer names
# Fields every line of this process carries: `worker` in a worker process (workers > 1), else none.
_process_fields: dict[str, Any] = {}

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
        }
        entry.update(getattr(record, "fields", None) or {"event": "message", "msg": record.getMessage()})
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", None) or {"event": "message", "msg": record.getMessage()})
        stamp = datetime.fromtimestamp(record.created).strftime("%Y-%m-%d %H:%M:%S")
        event = fields.pop("event", "")
        rest = " ".join(f"{key}={_text(value)}" for key, value in fields.items() if value is not None)
        return f"{stamp} {record.levelname:<7} {event} {rest}".rstrip()


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (" " in text or not text) else text


def configure(log_format: str = "json", level: str = "info", stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    LOGGER.handlers[:] = [handler]
    LOGGER.setLevel(LEVELS.get(level, logging.INFO))
    LOGGER.propagate = False


def set_process_fields(**fields: Any) -> None:
    _process_fields.clear()
    _process_fields.update(fields)


def enabled(level: int) -> bool:
    """Whether an event at `level` would be written: a caller may skip building its fields."""
    return LOGGER.isEnabledFor(level)


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event; fields whose value is None are left out."""
    if not LOGGER.isEnabledFor(level):
        return
    record_fields = {"event": name, **_process_fields}
    record_fields.update({key: value for key, value in fields.items() if value is not None})
    LOGGER.log(level, name, extra={"fields": record_fields})


def config_warnings(warnings: Sequence[Issue]) -> None:
    """The warnings `check` prints, as `config_warning` lines: when `run` starts and after each reload."""
    for warning in warnings:
        event("config_warning", logging.WARNING, path=warning.where, warning=str(warning))


def dn(text: str) -> str:
    """A DN as logs show it: cut at DN_LOG_LIMIT characters, with `…` when cut."""
    return text if len(text) <= DN_LOG_LIMIT else text[:DN_LOG_LIMIT] + "…"
