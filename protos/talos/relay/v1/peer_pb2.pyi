from talos.relay.v1 import relay_pb2 as _relay_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AttemptOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTEMPT_OUTCOME_UNSPECIFIED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_FAILED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_BUSY: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_REJECTED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_HANDED_BACK: _ClassVar[AttemptOutcome]
ATTEMPT_OUTCOME_UNSPECIFIED: AttemptOutcome
ATTEMPT_OUTCOME_FAILED: AttemptOutcome
ATTEMPT_OUTCOME_BUSY: AttemptOutcome
ATTEMPT_OUTCOME_REJECTED: AttemptOutcome
ATTEMPT_OUTCOME_HANDED_BACK: AttemptOutcome

class HostMessage(_message.Message):
    __slots__ = ("claim", "started", "progress", "result", "ended")
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    claim: Claim
    started: NodeStarted
    progress: _relay_pb2.JobProgress
    result: CheckedResult
    ended: AttemptEnded
    def __init__(self, claim: _Optional[_Union[Claim, _Mapping]] = ..., started: _Optional[_Union[NodeStarted, _Mapping]] = ..., progress: _Optional[_Union[_relay_pb2.JobProgress, _Mapping]] = ..., result: _Optional[_Union[CheckedResult, _Mapping]] = ..., ended: _Optional[_Union[AttemptEnded, _Mapping]] = ...) -> None: ...

class Claim(_message.Message):
    __slots__ = ("job_id", "secret", "host_replica", "node_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    HOST_REPLICA_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    secret: str
    host_replica: str
    node_id: str
    def __init__(self, job_id: _Optional[str] = ..., secret: _Optional[str] = ..., host_replica: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class NodeStarted(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class CheckedResult(_message.Message):
    __slots__ = ("image", "output_format", "width", "height", "render_seconds")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    RENDER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    output_format: str
    width: int
    height: int
    render_seconds: float
    def __init__(self, image: _Optional[bytes] = ..., output_format: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., render_seconds: _Optional[float] = ...) -> None: ...

class AttemptEnded(_message.Message):
    __slots__ = ("outcome", "reason", "node_id")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    outcome: AttemptOutcome
    reason: str
    node_id: str
    def __init__(self, outcome: _Optional[_Union[AttemptOutcome, str]] = ..., reason: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class OriginMessage(_message.Message):
    __slots__ = ("job", "cancel")
    JOB_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    job: _relay_pb2.RenderJob
    cancel: _relay_pb2.CancelJob
    def __init__(self, job: _Optional[_Union[_relay_pb2.RenderJob, _Mapping]] = ..., cancel: _Optional[_Union[_relay_pb2.CancelJob, _Mapping]] = ...) -> None: ...
