"""``Reporter``: task progress over one ``StreamReports`` stream.

A reporter sends reports back to back without waiting for each answer; Herald
stores them in the order sent and answers each once its transaction has
committed, in the same order. That costs Herald several times less than one
``ReportProgress`` call per report, and the reporter does not wait a round trip
per report.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType
from typing import Any

import grpc

from ._errors import HeraldError
from ._wire import Token, metadata, progress_request
from .v1 import tasks_pb2

# Herald reads no more of a stream while 1024 of its reports await answers.
MAX_IN_FLIGHT = 1024

_CODES = {code.value[0]: code.name.lower() for code in grpc.StatusCode}


class Reporter:
    """One open ``StreamReports`` stream; get it from :meth:`Client.reporter` and use
    it as ``async with client.reporter() as r:``.

    :meth:`progress` sends a report and returns the seq of the event it stored once
    Herald has committed it. :meth:`send_progress` only sends: it returns a future of
    that seq, so many reports can be in flight; at most ``max_in_flight`` are (it
    waits for answers past that). A refused report raises :class:`HeraldError` with
    Herald's code (``not_found``, ``invalid_argument``, ``failed_precondition``, …)
    and the reports after it are still stored. If the stream itself ends — Herald
    restarts, the token expires — every report not yet answered raises
    ``HeraldError`` (``unavailable``, ``unauthenticated``, …): whether it was stored
    is unknown, as after a dropped unary call, and the reporter cannot be used again;
    open another. Closing it waits for every answer.
    """

    def __init__(self, stub: Any, token: Token, max_in_flight: int = MAX_IN_FLIGHT) -> None:
        if not 1 <= max_in_flight <= MAX_IN_FLIGHT:
            raise ValueError(f"max_in_flight must be 1 to {MAX_IN_FLIGHT}")
        self._stub = stub
        self._token = token
        self._window = asyncio.Semaphore(max_in_flight)
        # The futures of the reports sent and not yet answered, in the order sent:
        # Herald answers in that order.
        self._pending: deque[asyncio.Future[int]] = deque()
        # Writes go one at a time, each report's future queued with it.
        self._writing = asyncio.Lock()
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._failure: HeraldError | None = None
        self._closed = False

    async def __aenter__(self) -> Reporter:
        self._open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _open(self) -> None:
        if self._call is None:
            self._call = self._stub.StreamReports(metadata=metadata(self._token))
            self._reader = asyncio.ensure_future(self._read())

    async def progress(
        self,
        task_id: str,
        percent: int,
        *,
        step: str = "",
        tool: str = "",
        message: str = "",
        error: bool = False,
    ) -> int:
        """Reports a task's progress (as :meth:`Client.report_progress`) and returns
        the seq of the stored event once it is committed."""
        sent = await self.send_progress(task_id, percent, step=step, tool=tool, message=message, error=error)
        return await sent

    async def send_progress(
        self,
        task_id: str,
        percent: int,
        *,
        step: str = "",
        tool: str = "",
        message: str = "",
        error: bool = False,
    ) -> asyncio.Future[int]:
        """Sends a progress report without waiting for its answer: the returned
        future gives the stored event's seq, or raises ``HeraldError``."""
        report = tasks_pb2.StreamReportsRequest(
            progress=progress_request(task_id, percent, step, tool, message, error)
        )
        return await self._send(report)

    async def _send(self, report: Any) -> asyncio.Future[int]:
        if self._closed:
            raise HeraldError("failed_precondition", "the reporter is closed")
        self._open()
        await self._window.acquire()
        async with self._writing:
            if self._closed or self._failure is not None:
                # Closed or failed while this waited for room: nothing would
                # answer a report written now.
                self._window.release()
                raise self._failure or HeraldError("failed_precondition", "the reporter is closed")
            answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._pending.append(answer)
            try:
                await self._call.write(report)
            except (grpc.RpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
                # The stream has ended: the reader fails this report with the
                # stream's status, as every other one not answered.
                pass
        return answer

    async def _read(self) -> None:
        failure = HeraldError("unavailable", "the report stream ended before every report was answered")
        try:
            while True:
                answer = await self._call.read()
                if answer is grpc.aio.EOF:
                    break
                if not self._pending:
                    failure = HeraldError("internal", "Herald answered a report that was not sent")
                    break
                sent = self._pending.popleft()
                self._window.release()
                if sent.done():
                    continue
                if answer.HasField("error"):
                    code = _CODES.get(answer.error.code, "unknown")
                    sent.set_exception(HeraldError(code, answer.error.message))
                else:
                    sent.set_result(answer.seq)
        except grpc.aio.AioRpcError as e:
            failure = self._ended(e)
        except asyncio.CancelledError:
            self._fail_pending(HeraldError("cancelled", "the reporter stopped before every report was answered"))
            raise
        self._fail_pending(failure)

    def _fail_pending(self, failure: HeraldError) -> None:
        self._failure = failure
        while self._pending:
            sent = self._pending.popleft()
            # Its place in the window too: a sender waiting for one learns of
            # the failure instead of waiting for ever.
            self._window.release()
            if not sent.done():
                sent.set_exception(failure)

    def _ended(self, error: grpc.aio.AioRpcError) -> HeraldError:
        # gRPC's core ends a stream whose connection dropped under a read or
        # write with a bare INTERNAL of its own, not Herald's: that is the
        # connection lost, as UNAVAILABLE says for a unary call.
        if error.code() == grpc.StatusCode.INTERNAL and error.details() == "Internal error from Core":
            return HeraldError("unavailable", "the connection to Herald was lost")
        return HeraldError.from_rpc(error)

    async def close(self) -> None:
        """Ends the stream once every report sent has its answer."""
        if self._closed or self._call is None:
            self._closed = True
            return
        self._closed = True
        async with self._writing:
            try:
                await self._call.done_writing()
            except (grpc.RpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
                pass
        if self._reader is not None:
            await self._reader
