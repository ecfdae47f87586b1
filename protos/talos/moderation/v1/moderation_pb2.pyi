from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class CheckPromptRequest(_message.Message):
    __slots__ = ("prompt", "negative_prompt", "final_prompt", "final_negative_prompt", "account_id")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    FINAL_PROMPT_FIELD_NUMBER: _ClassVar[int]
    FINAL_NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    negative_prompt: str
    final_prompt: str
    final_negative_prompt: str
    account_id: str
    def __init__(self, prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., final_prompt: _Optional[str] = ..., final_negative_prompt: _Optional[str] = ..., account_id: _Optional[str] = ...) -> None: ...

class PromptVerdict(_message.Message):
    __slots__ = ("blocked", "category", "policy_version", "cooldown_seconds")
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    COOLDOWN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    blocked: bool
    category: str
    policy_version: str
    cooldown_seconds: int
    def __init__(self, blocked: _Optional[bool] = ..., category: _Optional[str] = ..., policy_version: _Optional[str] = ..., cooldown_seconds: _Optional[int] = ...) -> None: ...

class ClassifyImageRequest(_message.Message):
    __slots__ = ("image",)
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    def __init__(self, image: _Optional[bytes] = ...) -> None: ...

class ImageVerdict(_message.Message):
    __slots__ = ("blocked", "category", "score", "threshold", "model_version")
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    blocked: bool
    category: str
    score: float
    threshold: float
    model_version: str
    def __init__(self, blocked: _Optional[bool] = ..., category: _Optional[str] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ..., model_version: _Optional[str] = ...) -> None: ...
