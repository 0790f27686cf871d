"""``herald.task(...)``: a synchronous context manager for plain scripts that
report the progress of one task."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import grpc

from ._errors import HeraldError
from ._wire import Token, metadata, progress_request, resolve, sync_channel, to_json_text
from .types import Task
from .v1 import tasks_pb2, tasks_pb2_grpc


class TaskHandle:
    """The task of a ``with herald.task(...) as t:`` block. ``t.result`` (settable)
    is stored when the block ends; ``t.id`` and ``t.task`` (the latest state)."""

    def __init__(self, stub: tasks_pb2_grpc.TaskServiceStub, token: Token, timeout: float) -> None:
        self._stub = stub
        self._token = token
        self._timeout = timeout
        self.task: Task | None = None
        self.result: Any = ""

    @property
    def id(self) -> str:
        assert self.task is not None
        return self.task.id

    def _call(self, method: Any, request: Any) -> Task:
        try:
            t = method(request, metadata=metadata(self._token), timeout=self._timeout)
        except grpc.RpcError as e:
            raise HeraldError.from_rpc(e) from None
        self.task = Task.from_proto(t)
        return self.task

    def progress(self, percent: int, *, step: str = "", tool: str = "", message: str = "", error: bool = False) -> Task:
        """Reports progress (0-100, a high-water mark; 100 completes the task)."""
        req = progress_request(self.id, percent, step, tool, message, error)
        return self._call(self._stub.ReportProgress, req)


class task:  # noqa: N801 - used as a function: ``with herald.task(...) as t``
    """``with herald.task("Index the docs", url=..., token=...) as t: t.progress(40, step="fetch")``

    Creates and starts the task on entry; on a normal exit completes it (with
    ``t.result``), on an exception fails it with the exception's message and lets
    the exception propagate. ``url`` and ``token`` default to ``$HERALD_URL`` and
    ``$HERALD_TOKEN``."""

    def __init__(
        self,
        title: str,
        *,
        url: str | None = None,
        token: Token | None = None,
        description: str = "",
        agent_id: str = "",
        timeout: float = 30.0,
    ) -> None:
        self._url, self._token = resolve(url, token)
        self._title, self._description, self._agent_id = title, description, agent_id
        self._timeout = timeout
        self._channel: grpc.Channel | None = None
        self._handle: TaskHandle | None = None

    def __enter__(self) -> TaskHandle:
        self._channel = sync_channel(self._url)
        try:
            h = TaskHandle(tasks_pb2_grpc.TaskServiceStub(self._channel), self._token, self._timeout)
            req = tasks_pb2.CreateTaskRequest(
                title=self._title, description=self._description, agent_id=self._agent_id
            )
            h._call(h._stub.CreateTask, req)
            h._call(h._stub.StartTask, tasks_pb2.StartTaskRequest(id=h.id))
        except BaseException:
            self._channel.close()
            raise
        self._handle = h
        return h

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        h, ch = self._handle, self._channel
        assert h is not None and ch is not None
        try:
            if h.task is not None and h.task.status in ("completed", "failed", "cancelled"):
                return  # a report of 100 completed it, or someone else finished it
            if exc is None:
                h._call(h._stub.CompleteTask, tasks_pb2.CompleteTaskRequest(id=h.id, result=to_json_text(h.result)))
            else:
                message = str(exc) or (exc_type.__name__ if exc_type else "error")
                try:
                    h._call(h._stub.FailTask, tasks_pb2.FailTaskRequest(id=h.id, error=message))
                except HeraldError:
                    pass  # the block's own exception is the one to see
        finally:
            ch.close()
