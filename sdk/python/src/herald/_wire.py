"""Connection set-up and conversions between the protobuf messages and the SDK's
plain Python values (JSON text <-> objects, enums <-> snake_case strings)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, Union

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from .v1 import tasks_pb2

Token = Union[str, Callable[[], str]]

# Reconnect quickly when Herald comes back (gRPC's default backoff grows to 120 s),
# and notice a dead peer on an idle stream.
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


def progress_request(
    task_id: str, percent: int, step: str, tool: str, message: str, error: bool
) -> tasks_pb2.ReportProgressRequest:
    """A progress report, the same whether sent alone or on a report stream."""
    return tasks_pb2.ReportProgressRequest(
        id=task_id, progress=percent, step=step, tool=tool, message=message, error=error
    )


def resolve(url: str | None, token: Token | None) -> tuple[str, Token]:
    url = url or os.environ.get("HERALD_URL") or "127.0.0.1:8080"
    token = token or os.environ.get("HERALD_TOKEN")
    if not token:
        raise ValueError("no token: pass token=... or set HERALD_TOKEN")
    return url, token


def _split(url: str) -> tuple[str, bool]:
    """``http://h:p``, ``https://h:p`` or ``h:p`` -> (target, tls)."""
    if url.startswith("https://"):
        return url[len("https://") :].rstrip("/"), True
    if url.startswith("http://"):
        return url[len("http://") :].rstrip("/"), False
    return url.rstrip("/"), False


def aio_channel(url: str) -> grpc.aio.Channel:
    target, tls = _split(url)
    if tls:
        return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=CHANNEL_OPTIONS)
    return grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)


def sync_channel(url: str) -> grpc.Channel:
    target, tls = _split(url)
    if tls:
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=CHANNEL_OPTIONS)
    return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)


def metadata(token: Token) -> tuple[tuple[str, str], ...]:
    value = token() if callable(token) else token
    return (("authorization", f"Bearer {value}"),)


def to_json_text(value: Any) -> str:
    """Text-or-JSON fields (execution input and output, task results): a ``str`` is
    sent as it is (Herald takes a plain-text input as ``{"prompt": text}``), anything
    else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), default=str)


def json_text(value: Any) -> str:
    """A JSON field (arguments, results, schemas): always JSON, a ``str`` too."""
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"), default=str)


def from_json_text(text: str) -> Any:
    """The reverse: parsed JSON, the text itself when it is not JSON, None when empty."""
    if text == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def enum_name(value: int, enum: Any, prefix: str) -> str:
    """``TASK_STATUS_IN_PROGRESS`` -> ``in_progress``."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return "unspecified"
    return name[len(prefix) :].lower() if name.startswith(prefix) else name.lower()


def enum_value(name: str, enum: Any, prefix: str) -> Any:
    try:
        return enum.Value(prefix + name.upper())
    except ValueError:
        raise ValueError(f"unknown value {name!r}") from None


def ts(t: Timestamp | None) -> datetime | None:
    if t is None or (t.seconds == 0 and t.nanos == 0):
        return None
    return t.ToDatetime(tzinfo=timezone.utc)


def timestamp(when: datetime | timedelta) -> Timestamp:
    if isinstance(when, timedelta):
        when = datetime.now(timezone.utc) + when
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    t = Timestamp()
    t.FromDatetime(when)
    return t
