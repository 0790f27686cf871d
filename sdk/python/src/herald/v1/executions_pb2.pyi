import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATUS_UNSPECIFIED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_QUEUED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_RUNNING: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_AWAITING_APPROVAL: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_DETACHED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_COMPLETED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_FAILED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_CANCELLED: _ClassVar[ExecutionStatus]

class DecisionKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_KIND_UNSPECIFIED: _ClassVar[DecisionKind]
    DECISION_KIND_APPROVE: _ClassVar[DecisionKind]
    DECISION_KIND_REJECT: _ClassVar[DecisionKind]
    DECISION_KIND_EDIT: _ClassVar[DecisionKind]
    DECISION_KIND_RESPOND: _ClassVar[DecisionKind]

class ApprovalStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APPROVAL_STATUS_UNSPECIFIED: _ClassVar[ApprovalStatus]
    APPROVAL_STATUS_PENDING: _ClassVar[ApprovalStatus]
    APPROVAL_STATUS_DECIDED: _ClassVar[ApprovalStatus]
EXECUTION_STATUS_UNSPECIFIED: ExecutionStatus
EXECUTION_STATUS_QUEUED: ExecutionStatus
EXECUTION_STATUS_RUNNING: ExecutionStatus
EXECUTION_STATUS_AWAITING_APPROVAL: ExecutionStatus
EXECUTION_STATUS_DETACHED: ExecutionStatus
EXECUTION_STATUS_COMPLETED: ExecutionStatus
EXECUTION_STATUS_FAILED: ExecutionStatus
EXECUTION_STATUS_CANCELLED: ExecutionStatus
DECISION_KIND_UNSPECIFIED: DecisionKind
DECISION_KIND_APPROVE: DecisionKind
DECISION_KIND_REJECT: DecisionKind
DECISION_KIND_EDIT: DecisionKind
DECISION_KIND_RESPOND: DecisionKind
APPROVAL_STATUS_UNSPECIFIED: ApprovalStatus
APPROVAL_STATUS_PENDING: ApprovalStatus
APPROVAL_STATUS_DECIDED: ApprovalStatus

class Execution(_message.Message):
    __slots__ = ("id", "agent_id", "task_id", "input", "status", "output", "error", "cancel_requested", "created_by", "tenant", "created_at", "updated_at", "last_seq")
    ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    id: str
    agent_id: str
    task_id: str
    input: str
    status: ExecutionStatus
    output: str
    error: str
    cancel_requested: bool
    created_by: str
    tenant: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    last_seq: int
    def __init__(self, id: _Optional[str] = ..., agent_id: _Optional[str] = ..., task_id: _Optional[str] = ..., input: _Optional[str] = ..., status: _Optional[_Union[ExecutionStatus, str]] = ..., output: _Optional[str] = ..., error: _Optional[str] = ..., cancel_requested: _Optional[bool] = ..., created_by: _Optional[str] = ..., tenant: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seq: _Optional[int] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("agent_id", "input", "task_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    input: str
    task_id: str
    def __init__(self, agent_id: _Optional[str] = ..., input: _Optional[str] = ..., task_id: _Optional[str] = ...) -> None: ...

class GetExecutionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListExecutionsRequest(_message.Message):
    __slots__ = ("status", "limit")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    status: ExecutionStatus
    limit: int
    def __init__(self, status: _Optional[_Union[ExecutionStatus, str]] = ..., limit: _Optional[int] = ...) -> None: ...

class ListExecutionsResponse(_message.Message):
    __slots__ = ("executions",)
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    executions: _containers.RepeatedCompositeFieldContainer[Execution]
    def __init__(self, executions: _Optional[_Iterable[_Union[Execution, _Mapping]]] = ...) -> None: ...

class CancelExecutionRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AttachRequest(_message.Message):
    __slots__ = ("agent_id", "running_execution_ids")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RUNNING_EXECUTION_IDS_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    running_execution_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, agent_id: _Optional[str] = ..., running_execution_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ExecutorCommand(_message.Message):
    __slots__ = ("execute", "cancel", "decision")
    EXECUTE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    execute: ExecuteCommand
    cancel: CancelCommand
    decision: DecisionCommand
    def __init__(self, execute: _Optional[_Union[ExecuteCommand, _Mapping]] = ..., cancel: _Optional[_Union[CancelCommand, _Mapping]] = ..., decision: _Optional[_Union[DecisionCommand, _Mapping]] = ...) -> None: ...

class ExecuteCommand(_message.Message):
    __slots__ = ("execution_id", "input", "task_id", "resumed")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    input: str
    task_id: str
    resumed: bool
    def __init__(self, execution_id: _Optional[str] = ..., input: _Optional[str] = ..., task_id: _Optional[str] = ..., resumed: _Optional[bool] = ...) -> None: ...

class CancelCommand(_message.Message):
    __slots__ = ("execution_id", "reason")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    reason: str
    def __init__(self, execution_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DecisionCommand(_message.Message):
    __slots__ = ("execution_id", "approval_id", "tool_call_id", "decision")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    approval_id: str
    tool_call_id: str
    decision: Decision
    def __init__(self, execution_id: _Optional[str] = ..., approval_id: _Optional[str] = ..., tool_call_id: _Optional[str] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class ReportEventRequest(_message.Message):
    __slots__ = ("execution_id", "thinking", "tool_call", "tool_result", "message_delta", "subagent_start", "subagent_end", "complete", "error", "cancelled")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    THINKING_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_DELTA_FIELD_NUMBER: _ClassVar[int]
    SUBAGENT_START_FIELD_NUMBER: _ClassVar[int]
    SUBAGENT_END_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    thinking: Thinking
    tool_call: ToolCall
    tool_result: ToolResult
    message_delta: MessageDelta
    subagent_start: Subagent
    subagent_end: Subagent
    complete: Complete
    error: ExecutionError
    cancelled: Complete
    def __init__(self, execution_id: _Optional[str] = ..., thinking: _Optional[_Union[Thinking, _Mapping]] = ..., tool_call: _Optional[_Union[ToolCall, _Mapping]] = ..., tool_result: _Optional[_Union[ToolResult, _Mapping]] = ..., message_delta: _Optional[_Union[MessageDelta, _Mapping]] = ..., subagent_start: _Optional[_Union[Subagent, _Mapping]] = ..., subagent_end: _Optional[_Union[Subagent, _Mapping]] = ..., complete: _Optional[_Union[Complete, _Mapping]] = ..., error: _Optional[_Union[ExecutionError, _Mapping]] = ..., cancelled: _Optional[_Union[Complete, _Mapping]] = ...) -> None: ...

class Thinking(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("tool_call_id", "tool", "arguments")
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    tool_call_id: str
    tool: str
    arguments: str
    def __init__(self, tool_call_id: _Optional[str] = ..., tool: _Optional[str] = ..., arguments: _Optional[str] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("tool_call_id", "result", "is_error")
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    tool_call_id: str
    result: str
    is_error: bool
    def __init__(self, tool_call_id: _Optional[str] = ..., result: _Optional[str] = ..., is_error: _Optional[bool] = ...) -> None: ...

class MessageDelta(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class Subagent(_message.Message):
    __slots__ = ("name", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    detail: str
    def __init__(self, name: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class Complete(_message.Message):
    __slots__ = ("output",)
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    output: str
    def __init__(self, output: _Optional[str] = ...) -> None: ...

class ExecutionError(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class RequestApprovalRequest(_message.Message):
    __slots__ = ("execution_id", "tool_call_id", "action", "arguments", "allowed_decisions", "arguments_schema", "deadline", "deadline_decision")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_DECISION_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    tool_call_id: str
    action: str
    arguments: str
    allowed_decisions: _containers.RepeatedScalarFieldContainer[DecisionKind]
    arguments_schema: str
    deadline: _timestamp_pb2.Timestamp
    deadline_decision: DecisionKind
    def __init__(self, execution_id: _Optional[str] = ..., tool_call_id: _Optional[str] = ..., action: _Optional[str] = ..., arguments: _Optional[str] = ..., allowed_decisions: _Optional[_Iterable[_Union[DecisionKind, str]]] = ..., arguments_schema: _Optional[str] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deadline_decision: _Optional[_Union[DecisionKind, str]] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("kind", "arguments", "message", "decided_by", "decided_at", "by_deadline")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    BY_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    kind: DecisionKind
    arguments: str
    message: str
    decided_by: str
    decided_at: _timestamp_pb2.Timestamp
    by_deadline: bool
    def __init__(self, kind: _Optional[_Union[DecisionKind, str]] = ..., arguments: _Optional[str] = ..., message: _Optional[str] = ..., decided_by: _Optional[str] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., by_deadline: _Optional[bool] = ...) -> None: ...

class Approval(_message.Message):
    __slots__ = ("id", "execution_id", "tool_call_id", "action", "arguments", "allowed_decisions", "arguments_schema", "deadline", "deadline_decision", "status", "requested_by", "requested_at", "decision", "tenant", "last_seq")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_DECISIONS_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_DECISION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    id: str
    execution_id: str
    tool_call_id: str
    action: str
    arguments: str
    allowed_decisions: _containers.RepeatedScalarFieldContainer[DecisionKind]
    arguments_schema: str
    deadline: _timestamp_pb2.Timestamp
    deadline_decision: DecisionKind
    status: ApprovalStatus
    requested_by: str
    requested_at: _timestamp_pb2.Timestamp
    decision: Decision
    tenant: str
    last_seq: int
    def __init__(self, id: _Optional[str] = ..., execution_id: _Optional[str] = ..., tool_call_id: _Optional[str] = ..., action: _Optional[str] = ..., arguments: _Optional[str] = ..., allowed_decisions: _Optional[_Iterable[_Union[DecisionKind, str]]] = ..., arguments_schema: _Optional[str] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., deadline_decision: _Optional[_Union[DecisionKind, str]] = ..., status: _Optional[_Union[ApprovalStatus, str]] = ..., requested_by: _Optional[str] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., tenant: _Optional[str] = ..., last_seq: _Optional[int] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("approval_id", "kind", "arguments", "message")
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    approval_id: str
    kind: DecisionKind
    arguments: str
    message: str
    def __init__(self, approval_id: _Optional[str] = ..., kind: _Optional[_Union[DecisionKind, str]] = ..., arguments: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class GetApprovalRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListPendingApprovalsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPendingApprovalsResponse(_message.Message):
    __slots__ = ("approvals",)
    APPROVALS_FIELD_NUMBER: _ClassVar[int]
    approvals: _containers.RepeatedCompositeFieldContainer[Approval]
    def __init__(self, approvals: _Optional[_Iterable[_Union[Approval, _Mapping]]] = ...) -> None: ...
