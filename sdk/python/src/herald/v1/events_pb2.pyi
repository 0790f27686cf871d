import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from herald.v1 import executions_pb2 as _executions_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATUS_UNSPECIFIED: _ClassVar[TaskStatus]
    TASK_STATUS_PENDING: _ClassVar[TaskStatus]
    TASK_STATUS_IN_PROGRESS: _ClassVar[TaskStatus]
    TASK_STATUS_COMPLETED: _ClassVar[TaskStatus]
    TASK_STATUS_FAILED: _ClassVar[TaskStatus]
    TASK_STATUS_CANCELLED: _ClassVar[TaskStatus]

class AgentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AGENT_STATUS_UNSPECIFIED: _ClassVar[AgentStatus]
    AGENT_STATUS_CREATED: _ClassVar[AgentStatus]
    AGENT_STATUS_ONLINE: _ClassVar[AgentStatus]
    AGENT_STATUS_BUSY: _ClassVar[AgentStatus]
    AGENT_STATUS_IDLE: _ClassVar[AgentStatus]
    AGENT_STATUS_OFFLINE: _ClassVar[AgentStatus]
TASK_STATUS_UNSPECIFIED: TaskStatus
TASK_STATUS_PENDING: TaskStatus
TASK_STATUS_IN_PROGRESS: TaskStatus
TASK_STATUS_COMPLETED: TaskStatus
TASK_STATUS_FAILED: TaskStatus
TASK_STATUS_CANCELLED: TaskStatus
AGENT_STATUS_UNSPECIFIED: AgentStatus
AGENT_STATUS_CREATED: AgentStatus
AGENT_STATUS_ONLINE: AgentStatus
AGENT_STATUS_BUSY: AgentStatus
AGENT_STATUS_IDLE: AgentStatus
AGENT_STATUS_OFFLINE: AgentStatus

class SubscribeRequest(_message.Message):
    __slots__ = ("channels", "after_seq")
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    channels: _containers.RepeatedScalarFieldContainer[str]
    after_seq: int
    def __init__(self, channels: _Optional[_Iterable[str]] = ..., after_seq: _Optional[int] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("channel", "after_seq", "limit")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    channel: str
    after_seq: int
    limit: int
    def __init__(self, channel: _Optional[str] = ..., after_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("seq", "channel", "type", "timestamp", "actor", "resource", "progress_collapsed", "task_created", "task_progress", "task_completed", "task_failed", "task_cancelled", "agent_update", "execution_event", "approval_event")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_COLLAPSED_FIELD_NUMBER: _ClassVar[int]
    TASK_CREATED_FIELD_NUMBER: _ClassVar[int]
    TASK_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    TASK_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TASK_FAILED_FIELD_NUMBER: _ClassVar[int]
    TASK_CANCELLED_FIELD_NUMBER: _ClassVar[int]
    AGENT_UPDATE_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_EVENT_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_EVENT_FIELD_NUMBER: _ClassVar[int]
    seq: int
    channel: str
    type: str
    timestamp: _timestamp_pb2.Timestamp
    actor: str
    resource: str
    progress_collapsed: ProgressCollapsed
    task_created: TaskCreated
    task_progress: TaskProgress
    task_completed: TaskCompleted
    task_failed: TaskFailed
    task_cancelled: TaskCancelled
    agent_update: AgentUpdate
    execution_event: ExecutionEvent
    approval_event: ApprovalEvent
    def __init__(self, seq: _Optional[int] = ..., channel: _Optional[str] = ..., type: _Optional[str] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., resource: _Optional[str] = ..., progress_collapsed: _Optional[_Union[ProgressCollapsed, _Mapping]] = ..., task_created: _Optional[_Union[TaskCreated, _Mapping]] = ..., task_progress: _Optional[_Union[TaskProgress, _Mapping]] = ..., task_completed: _Optional[_Union[TaskCompleted, _Mapping]] = ..., task_failed: _Optional[_Union[TaskFailed, _Mapping]] = ..., task_cancelled: _Optional[_Union[TaskCancelled, _Mapping]] = ..., agent_update: _Optional[_Union[AgentUpdate, _Mapping]] = ..., execution_event: _Optional[_Union[ExecutionEvent, _Mapping]] = ..., approval_event: _Optional[_Union[ApprovalEvent, _Mapping]] = ...) -> None: ...

class ProgressCollapsed(_message.Message):
    __slots__ = ("task_id", "first_seq", "last_seq", "count")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    first_seq: int
    last_seq: int
    count: int
    def __init__(self, task_id: _Optional[str] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class ExecutionEvent(_message.Message):
    __slots__ = ("execution_id", "status", "data")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    status: _executions_pb2.ExecutionStatus
    data: str
    def __init__(self, execution_id: _Optional[str] = ..., status: _Optional[_Union[_executions_pb2.ExecutionStatus, str]] = ..., data: _Optional[str] = ...) -> None: ...

class ApprovalEvent(_message.Message):
    __slots__ = ("approval_id", "execution_id", "data")
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    execution_id: str
    data: str
    def __init__(self, approval_id: _Optional[str] = ..., execution_id: _Optional[str] = ..., data: _Optional[str] = ...) -> None: ...

class TaskCreated(_message.Message):
    __slots__ = ("task_id", "title", "description", "agent_id", "status")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    title: str
    description: str
    agent_id: str
    status: TaskStatus
    def __init__(self, task_id: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., agent_id: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ...) -> None: ...

class TaskProgress(_message.Message):
    __slots__ = ("task_id", "status", "progress", "step", "tool", "message", "error")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: TaskStatus
    progress: int
    step: str
    tool: str
    message: str
    error: bool
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., progress: _Optional[int] = ..., step: _Optional[str] = ..., tool: _Optional[str] = ..., message: _Optional[str] = ..., error: _Optional[bool] = ...) -> None: ...

class TaskCompleted(_message.Message):
    __slots__ = ("task_id", "status", "progress", "result")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: TaskStatus
    progress: int
    result: str
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., progress: _Optional[int] = ..., result: _Optional[str] = ...) -> None: ...

class TaskFailed(_message.Message):
    __slots__ = ("task_id", "status", "progress", "error")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: TaskStatus
    progress: int
    error: str
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., progress: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class TaskCancelled(_message.Message):
    __slots__ = ("task_id", "status", "progress", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: TaskStatus
    progress: int
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[_Union[TaskStatus, str]] = ..., progress: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class AgentUpdate(_message.Message):
    __slots__ = ("agent_id", "status", "name", "type", "capabilities")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    status: AgentStatus
    name: str
    type: str
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_id: _Optional[str] = ..., status: _Optional[_Union[AgentStatus, str]] = ..., name: _Optional[str] = ..., type: _Optional[str] = ..., capabilities: _Optional[_Iterable[str]] = ...) -> None: ...
