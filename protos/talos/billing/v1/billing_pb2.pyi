import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HoldState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOLD_STATE_UNSPECIFIED: _ClassVar[HoldState]
    HOLD_STATE_HELD: _ClassVar[HoldState]
    HOLD_STATE_CAPTURED: _ClassVar[HoldState]
    HOLD_STATE_RELEASED: _ClassVar[HoldState]
    HOLD_STATE_EXPIRED: _ClassVar[HoldState]
HOLD_STATE_UNSPECIFIED: HoldState
HOLD_STATE_HELD: HoldState
HOLD_STATE_CAPTURED: HoldState
HOLD_STATE_RELEASED: HoldState
HOLD_STATE_EXPIRED: HoldState

class CreateAccountRequest(_message.Message):
    __slots__ = ("credits", "daily_allowance")
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    DAILY_ALLOWANCE_FIELD_NUMBER: _ClassVar[int]
    credits: int
    daily_allowance: int
    def __init__(self, credits: _Optional[int] = ..., daily_allowance: _Optional[int] = ...) -> None: ...

class CreateAccountResponse(_message.Message):
    __slots__ = ("account_id", "api_key")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    api_key: str
    def __init__(self, account_id: _Optional[str] = ..., api_key: _Optional[str] = ...) -> None: ...

class AuthenticateRequest(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    def __init__(self, api_key: _Optional[str] = ...) -> None: ...

class GetAccountRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class AccountState(_message.Message):
    __slots__ = ("account_id", "balance", "daily_allowance", "allowance_remaining", "allowance_resets_at", "age_confirmed", "price_per_image")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    DAILY_ALLOWANCE_FIELD_NUMBER: _ClassVar[int]
    ALLOWANCE_REMAINING_FIELD_NUMBER: _ClassVar[int]
    ALLOWANCE_RESETS_AT_FIELD_NUMBER: _ClassVar[int]
    AGE_CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_IMAGE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    balance: int
    daily_allowance: int
    allowance_remaining: int
    allowance_resets_at: _timestamp_pb2.Timestamp
    age_confirmed: bool
    price_per_image: int
    def __init__(self, account_id: _Optional[str] = ..., balance: _Optional[int] = ..., daily_allowance: _Optional[int] = ..., allowance_remaining: _Optional[int] = ..., allowance_resets_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., age_confirmed: _Optional[bool] = ..., price_per_image: _Optional[int] = ...) -> None: ...

class GrantRequest(_message.Message):
    __slots__ = ("account_id", "credits")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CREDITS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    credits: int
    def __init__(self, account_id: _Optional[str] = ..., credits: _Optional[int] = ...) -> None: ...

class SetAllowanceRequest(_message.Message):
    __slots__ = ("account_id", "daily_allowance")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    DAILY_ALLOWANCE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    daily_allowance: int
    def __init__(self, account_id: _Optional[str] = ..., daily_allowance: _Optional[int] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: str
    def __init__(self, api_key: _Optional[str] = ...) -> None: ...

class RevokeApiKeysRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class RevokeApiKeysResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: int
    def __init__(self, revoked: _Optional[int] = ...) -> None: ...

class ConfirmAgeRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class ReserveRequest(_message.Message):
    __slots__ = ("job_id", "account_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    account_id: str
    def __init__(self, job_id: _Optional[str] = ..., account_id: _Optional[str] = ...) -> None: ...

class Hold(_message.Message):
    __slots__ = ("job_id", "account_id", "amount", "from_allowance", "from_balance", "state", "expires_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    FROM_ALLOWANCE_FIELD_NUMBER: _ClassVar[int]
    FROM_BALANCE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    account_id: str
    amount: int
    from_allowance: int
    from_balance: int
    state: HoldState
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., account_id: _Optional[str] = ..., amount: _Optional[int] = ..., from_allowance: _Optional[int] = ..., from_balance: _Optional[int] = ..., state: _Optional[_Union[HoldState, str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReserveResponse(_message.Message):
    __slots__ = ("hold", "account")
    HOLD_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    hold: Hold
    account: AccountState
    def __init__(self, hold: _Optional[_Union[Hold, _Mapping]] = ..., account: _Optional[_Union[AccountState, _Mapping]] = ...) -> None: ...

class ReserveManyRequest(_message.Message):
    __slots__ = ("account_id", "job_ids")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_IDS_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    job_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, account_id: _Optional[str] = ..., job_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ReserveManyResponse(_message.Message):
    __slots__ = ("holds", "account")
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    holds: _containers.RepeatedCompositeFieldContainer[Hold]
    account: AccountState
    def __init__(self, holds: _Optional[_Iterable[_Union[Hold, _Mapping]]] = ..., account: _Optional[_Union[AccountState, _Mapping]] = ...) -> None: ...

class CaptureRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CaptureResponse(_message.Message):
    __slots__ = ("hold", "account")
    HOLD_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    hold: Hold
    account: AccountState
    def __init__(self, hold: _Optional[_Union[Hold, _Mapping]] = ..., account: _Optional[_Union[AccountState, _Mapping]] = ...) -> None: ...

class ReleaseRequest(_message.Message):
    __slots__ = ("job_id", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReleaseResponse(_message.Message):
    __slots__ = ("hold", "account")
    HOLD_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    hold: Hold
    account: AccountState
    def __init__(self, hold: _Optional[_Union[Hold, _Mapping]] = ..., account: _Optional[_Union[AccountState, _Mapping]] = ...) -> None: ...

class CreateNodeTokenRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CreateNodeTokenResponse(_message.Message):
    __slots__ = ("node_id", "token")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    token: str
    def __init__(self, node_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class AuthenticateNodeRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class NodeIdentity(_message.Message):
    __slots__ = ("node_id", "name")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    name: str
    def __init__(self, node_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class RevokeNodeTokenRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class RevokeNodeTokenResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    def __init__(self, revoked: _Optional[bool] = ...) -> None: ...

class ActiveNodesRequest(_message.Message):
    __slots__ = ("node_ids",)
    NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    node_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, node_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ActiveNodesResponse(_message.Message):
    __slots__ = ("active_node_ids",)
    ACTIVE_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    active_node_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, active_node_ids: _Optional[_Iterable[str]] = ...) -> None: ...
