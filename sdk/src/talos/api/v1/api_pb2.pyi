import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "negative_prompt", "style", "size", "aspect_ratio", "steps", "guidance", "seed", "nsfw", "output_format", "idempotency_key", "n", "output_compression")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ASPECT_RATIO_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    NSFW_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    negative_prompt: str
    style: str
    size: str
    aspect_ratio: str
    steps: int
    guidance: float
    seed: int
    nsfw: bool
    output_format: str
    idempotency_key: str
    n: int
    output_compression: int
    def __init__(self, prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., style: _Optional[str] = ..., size: _Optional[str] = ..., aspect_ratio: _Optional[str] = ..., steps: _Optional[int] = ..., guidance: _Optional[float] = ..., seed: _Optional[int] = ..., nsfw: _Optional[bool] = ..., output_format: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., n: _Optional[int] = ..., output_compression: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "image", "queued", "started", "progress", "completed", "failed")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    image: int
    queued: Queued
    started: Started
    progress: Progress
    completed: Completed
    failed: Failed
    def __init__(self, job_id: _Optional[str] = ..., image: _Optional[int] = ..., queued: _Optional[_Union[Queued, _Mapping]] = ..., started: _Optional[_Union[Started, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., completed: _Optional[_Union[Completed, _Mapping]] = ..., failed: _Optional[_Union[Failed, _Mapping]] = ...) -> None: ...

class Queued(_message.Message):
    __slots__ = ("position", "eta_seconds")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    position: int
    eta_seconds: float
    def __init__(self, position: _Optional[int] = ..., eta_seconds: _Optional[float] = ...) -> None: ...

class Started(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Progress(_message.Message):
    __slots__ = ("step", "total_steps", "preview_jpeg", "preview_withheld")
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_JPEG_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_WITHHELD_FIELD_NUMBER: _ClassVar[int]
    step: int
    total_steps: int
    preview_jpeg: bytes
    preview_withheld: bool
    def __init__(self, step: _Optional[int] = ..., total_steps: _Optional[int] = ..., preview_jpeg: _Optional[bytes] = ..., preview_withheld: _Optional[bool] = ...) -> None: ...

class Completed(_message.Message):
    __slots__ = ("image", "output_format", "width", "height", "seed", "credits_charged", "balance")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CREDITS_CHARGED_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    output_format: str
    width: int
    height: int
    seed: int
    credits_charged: int
    balance: int
    def __init__(self, image: _Optional[bytes] = ..., output_format: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., seed: _Optional[int] = ..., credits_charged: _Optional[int] = ..., balance: _Optional[int] = ...) -> None: ...

class Failed(_message.Message):
    __slots__ = ("error", "refunded", "seed")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REFUNDED_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    error: Error
    refunded: bool
    seed: int
    def __init__(self, error: _Optional[_Union[Error, _Mapping]] = ..., refunded: _Optional[bool] = ..., seed: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class SubmitResponse(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    def __init__(self, cancelled: _Optional[bool] = ...) -> None: ...

class GetAccountRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Account(_message.Message):
    __slots__ = ("account_id", "balance", "allowance", "age_confirmed", "price_per_image")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    ALLOWANCE_FIELD_NUMBER: _ClassVar[int]
    AGE_CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    balance: int
    allowance: Allowance
    age_confirmed: bool
    price_per_image: int
    def __init__(self, account_id: _Optional[str] = ..., balance: _Optional[int] = ..., allowance: _Optional[_Union[Allowance, _Mapping]] = ..., age_confirmed: _Optional[bool] = ..., price_per_image: _Optional[int] = ...) -> None: ...

class Allowance(_message.Message):
    __slots__ = ("daily", "remaining", "resets_at")
    DAILY_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESETS_AT_FIELD_NUMBER: _ClassVar[int]
    daily: int
    remaining: int
    resets_at: _timestamp_pb2.Timestamp
    def __init__(self, daily: _Optional[int] = ..., remaining: _Optional[int] = ..., resets_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ConfirmAgeRequest(_message.Message):
    __slots__ = ("confirm",)
    CONFIRM_FIELD_NUMBER: _ClassVar[int]
    confirm: bool
    def __init__(self, confirm: _Optional[bool] = ...) -> None: ...

class ConfirmAgeResponse(_message.Message):
    __slots__ = ("age_confirmed",)
    AGE_CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    age_confirmed: bool
    def __init__(self, age_confirmed: _Optional[bool] = ...) -> None: ...

class GetOptionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Options(_message.Message):
    __slots__ = ("styles", "sizes", "steps", "guidance", "price_per_image", "output_formats", "n")
    STYLES_FIELD_NUMBER: _ClassVar[int]
    SIZES_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMATS_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    styles: _containers.RepeatedCompositeFieldContainer[Style]
    sizes: _containers.RepeatedCompositeFieldContainer[Size]
    steps: IntRange
    guidance: FloatRange
    price_per_image: int
    output_formats: _containers.RepeatedScalarFieldContainer[str]
    n: IntRange
    def __init__(self, styles: _Optional[_Iterable[_Union[Style, _Mapping]]] = ..., sizes: _Optional[_Iterable[_Union[Size, _Mapping]]] = ..., steps: _Optional[_Union[IntRange, _Mapping]] = ..., guidance: _Optional[_Union[FloatRange, _Mapping]] = ..., price_per_image: _Optional[int] = ..., output_formats: _Optional[_Iterable[str]] = ..., n: _Optional[_Union[IntRange, _Mapping]] = ...) -> None: ...

class Style(_message.Message):
    __slots__ = ("id", "name", "prompt_template", "negative_prompt", "default_guidance")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_GUIDANCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    prompt_template: str
    negative_prompt: str
    default_guidance: float
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., prompt_template: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., default_guidance: _Optional[float] = ...) -> None: ...

class Size(_message.Message):
    __slots__ = ("id", "width", "height", "aspect_ratio")
    ID_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ASPECT_RATIO_FIELD_NUMBER: _ClassVar[int]
    id: str
    width: int
    height: int
    aspect_ratio: str
    def __init__(self, id: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., aspect_ratio: _Optional[str] = ...) -> None: ...

class IntRange(_message.Message):
    __slots__ = ("min", "max", "default")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    min: int
    max: int
    default: int
    def __init__(self, min: _Optional[int] = ..., max: _Optional[int] = ..., default: _Optional[int] = ...) -> None: ...

class FloatRange(_message.Message):
    __slots__ = ("min", "max", "default")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    min: float
    max: float
    default: float
    def __init__(self, min: _Optional[float] = ..., max: _Optional[float] = ..., default: _Optional[float] = ...) -> None: ...
