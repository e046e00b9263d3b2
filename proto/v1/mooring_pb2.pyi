from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Mode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODE_UNSPECIFIED: _ClassVar[Mode]
    MODE_MANAGED: _ClassVar[Mode]
    MODE_AUTONOMOUS: _ClassVar[Mode]

class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KIND_UNSPECIFIED: _ClassVar[Kind]
    KIND_APPLICATION: _ClassVar[Kind]
    KIND_APP_PROJECT: _ClassVar[Kind]

class Operation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_UNSPECIFIED: _ClassVar[Operation]
    OPERATION_UPSERT: _ClassVar[Operation]
    OPERATION_DELETE: _ClassVar[Operation]
MODE_UNSPECIFIED: Mode
MODE_MANAGED: Mode
MODE_AUTONOMOUS: Mode
KIND_UNSPECIFIED: Kind
KIND_APPLICATION: Kind
KIND_APP_PROJECT: Kind
OPERATION_UNSPECIFIED: Operation
OPERATION_UPSERT: Operation
OPERATION_DELETE: Operation

class Envelope(_message.Message):
    __slots__ = ("seq", "hello", "welcome", "redirect", "event", "status", "ack", "resync_request", "resync_done", "heartbeat", "goodbye")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    RESYNC_REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESYNC_DONE_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    GOODBYE_FIELD_NUMBER: _ClassVar[int]
    seq: int
    hello: Hello
    welcome: Welcome
    redirect: Redirect
    event: ResourceEvent
    status: StatusUpdate
    ack: Ack
    resync_request: ResyncRequest
    resync_done: ResyncDone
    heartbeat: Heartbeat
    goodbye: Goodbye
    def __init__(self, seq: _Optional[int] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., redirect: _Optional[_Union[Redirect, _Mapping]] = ..., event: _Optional[_Union[ResourceEvent, _Mapping]] = ..., status: _Optional[_Union[StatusUpdate, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., resync_request: _Optional[_Union[ResyncRequest, _Mapping]] = ..., resync_done: _Optional[_Union[ResyncDone, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., goodbye: _Optional[_Union[Goodbye, _Mapping]] = ...) -> None: ...

class ResourceKey(_message.Message):
    __slots__ = ("kind", "name")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    kind: Kind
    name: str
    def __init__(self, kind: _Optional[_Union[Kind, str]] = ..., name: _Optional[str] = ...) -> None: ...

class InventoryItem(_message.Message):
    __slots__ = ("key", "version", "checksum", "status_checksum")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    STATUS_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    key: ResourceKey
    version: int
    checksum: str
    status_checksum: str
    def __init__(self, key: _Optional[_Union[ResourceKey, _Mapping]] = ..., version: _Optional[int] = ..., checksum: _Optional[str] = ..., status_checksum: _Optional[str] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("agent_name", "mode", "agent_version", "min_protocol", "max_protocol", "inventory", "known_epoch", "redirect_hops", "unreachable_owner")
    AGENT_NAME_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    MIN_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    MAX_PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    KNOWN_EPOCH_FIELD_NUMBER: _ClassVar[int]
    REDIRECT_HOPS_FIELD_NUMBER: _ClassVar[int]
    UNREACHABLE_OWNER_FIELD_NUMBER: _ClassVar[int]
    agent_name: str
    mode: Mode
    agent_version: str
    min_protocol: int
    max_protocol: int
    inventory: _containers.RepeatedCompositeFieldContainer[InventoryItem]
    known_epoch: int
    redirect_hops: int
    unreachable_owner: str
    def __init__(self, agent_name: _Optional[str] = ..., mode: _Optional[_Union[Mode, str]] = ..., agent_version: _Optional[str] = ..., min_protocol: _Optional[int] = ..., max_protocol: _Optional[int] = ..., inventory: _Optional[_Iterable[_Union[InventoryItem, _Mapping]]] = ..., known_epoch: _Optional[int] = ..., redirect_hops: _Optional[int] = ..., unreachable_owner: _Optional[str] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("replica_id", "epoch", "session_id", "protocol", "heartbeat_interval_ms", "max_message_bytes", "standby_endpoint")
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STANDBY_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    replica_id: str
    epoch: int
    session_id: str
    protocol: int
    heartbeat_interval_ms: int
    max_message_bytes: int
    standby_endpoint: str
    def __init__(self, replica_id: _Optional[str] = ..., epoch: _Optional[int] = ..., session_id: _Optional[str] = ..., protocol: _Optional[int] = ..., heartbeat_interval_ms: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., standby_endpoint: _Optional[str] = ...) -> None: ...

class Redirect(_message.Message):
    __slots__ = ("owner_endpoint", "owner_replica_id", "epoch", "reason")
    OWNER_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    OWNER_REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    owner_endpoint: str
    owner_replica_id: str
    epoch: int
    reason: str
    def __init__(self, owner_endpoint: _Optional[str] = ..., owner_replica_id: _Optional[str] = ..., epoch: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ResourceEvent(_message.Message):
    __slots__ = ("key", "operation", "version", "checksum", "object_json")
    KEY_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    OBJECT_JSON_FIELD_NUMBER: _ClassVar[int]
    key: ResourceKey
    operation: Operation
    version: int
    checksum: str
    object_json: str
    def __init__(self, key: _Optional[_Union[ResourceKey, _Mapping]] = ..., operation: _Optional[_Union[Operation, str]] = ..., version: _Optional[int] = ..., checksum: _Optional[str] = ..., object_json: _Optional[str] = ...) -> None: ...

class StatusUpdate(_message.Message):
    __slots__ = ("key", "version", "status_json", "status_checksum")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_JSON_FIELD_NUMBER: _ClassVar[int]
    STATUS_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    key: ResourceKey
    version: int
    status_json: str
    status_checksum: str
    def __init__(self, key: _Optional[_Union[ResourceKey, _Mapping]] = ..., version: _Optional[int] = ..., status_json: _Optional[str] = ..., status_checksum: _Optional[str] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("seq", "ok", "error")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    seq: int
    ok: bool
    error: str
    def __init__(self, seq: _Optional[int] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class ResyncRequest(_message.Message):
    __slots__ = ("inventory",)
    INVENTORY_FIELD_NUMBER: _ClassVar[int]
    inventory: _containers.RepeatedCompositeFieldContainer[InventoryItem]
    def __init__(self, inventory: _Optional[_Iterable[_Union[InventoryItem, _Mapping]]] = ...) -> None: ...

class ResyncDone(_message.Message):
    __slots__ = ("sent",)
    SENT_FIELD_NUMBER: _ClassVar[int]
    sent: int
    def __init__(self, sent: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sent_unix_ms", "standby_endpoint")
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    STANDBY_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    sent_unix_ms: int
    standby_endpoint: str
    def __init__(self, sent_unix_ms: _Optional[int] = ..., standby_endpoint: _Optional[str] = ...) -> None: ...

class Goodbye(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...
