from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AgentMessage(_message.Message):
    __slots__ = ("hello", "sync", "mutations", "flows", "stats")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    MUTATIONS_FIELD_NUMBER: _ClassVar[int]
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    sync: Sync
    mutations: Mutations
    flows: Flows
    stats: Stats
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., sync: _Optional[_Union[Sync, _Mapping]] = ..., mutations: _Optional[_Union[Mutations, _Mapping]] = ..., flows: _Optional[_Union[Flows, _Mapping]] = ..., stats: _Optional[_Union[Stats, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("version", "host_id", "token", "software")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HOST_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_FIELD_NUMBER: _ClassVar[int]
    version: int
    host_id: str
    token: str
    software: str
    def __init__(self, version: _Optional[int] = ..., host_id: _Optional[str] = ..., token: _Optional[str] = ..., software: _Optional[str] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("id", "metadata", "host", "origin", "created_at", "updated_at", "revision", "deleted_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DELETED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    metadata: bytes
    host: str
    origin: str
    created_at: int
    updated_at: int
    revision: int
    deleted_at: int
    def __init__(self, id: _Optional[str] = ..., metadata: _Optional[bytes] = ..., host: _Optional[str] = ..., origin: _Optional[str] = ..., created_at: _Optional[int] = ..., updated_at: _Optional[int] = ..., revision: _Optional[int] = ..., deleted_at: _Optional[int] = ...) -> None: ...

class Edge(_message.Message):
    __slots__ = ("id", "parent", "child", "metadata", "host", "origin", "created_at", "updated_at", "revision", "deleted_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CHILD_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    DELETED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    parent: str
    child: str
    metadata: bytes
    host: str
    origin: str
    created_at: int
    updated_at: int
    revision: int
    deleted_at: int
    def __init__(self, id: _Optional[str] = ..., parent: _Optional[str] = ..., child: _Optional[str] = ..., metadata: _Optional[bytes] = ..., host: _Optional[str] = ..., origin: _Optional[str] = ..., created_at: _Optional[int] = ..., updated_at: _Optional[int] = ..., revision: _Optional[int] = ..., deleted_at: _Optional[int] = ...) -> None: ...

class Sync(_message.Message):
    __slots__ = ("nodes", "edges", "more")
    NODES_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    edges: _containers.RepeatedCompositeFieldContainer[Edge]
    more: bool
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[Edge, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...

class Mutation(_message.Message):
    __slots__ = ("node_added", "node_updated", "node_deleted", "edge_added", "edge_updated", "edge_deleted")
    NODE_ADDED_FIELD_NUMBER: _ClassVar[int]
    NODE_UPDATED_FIELD_NUMBER: _ClassVar[int]
    NODE_DELETED_FIELD_NUMBER: _ClassVar[int]
    EDGE_ADDED_FIELD_NUMBER: _ClassVar[int]
    EDGE_UPDATED_FIELD_NUMBER: _ClassVar[int]
    EDGE_DELETED_FIELD_NUMBER: _ClassVar[int]
    node_added: Node
    node_updated: Node
    node_deleted: Node
    edge_added: Edge
    edge_updated: Edge
    edge_deleted: Edge
    def __init__(self, node_added: _Optional[_Union[Node, _Mapping]] = ..., node_updated: _Optional[_Union[Node, _Mapping]] = ..., node_deleted: _Optional[_Union[Node, _Mapping]] = ..., edge_added: _Optional[_Union[Edge, _Mapping]] = ..., edge_updated: _Optional[_Union[Edge, _Mapping]] = ..., edge_deleted: _Optional[_Union[Edge, _Mapping]] = ...) -> None: ...

class Mutations(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Mutation]
    def __init__(self, items: _Optional[_Iterable[_Union[Mutation, _Mapping]]] = ...) -> None: ...

class Flows(_message.Message):
    __slots__ = ("seq", "capture_id", "flows")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_ID_FIELD_NUMBER: _ClassVar[int]
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    capture_id: str
    flows: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, seq: _Optional[int] = ..., capture_id: _Optional[str] = ..., flows: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Stats(_message.Message):
    __slots__ = ("capture_id", "node_id", "state", "error", "packets_received", "packets_dropped", "flows_dropped", "flows_active", "at")
    CAPTURE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PACKETS_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    PACKETS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    FLOWS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    FLOWS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    capture_id: str
    node_id: str
    state: str
    error: str
    packets_received: int
    packets_dropped: int
    flows_dropped: int
    flows_active: int
    at: int
    def __init__(self, capture_id: _Optional[str] = ..., node_id: _Optional[str] = ..., state: _Optional[str] = ..., error: _Optional[str] = ..., packets_received: _Optional[int] = ..., packets_dropped: _Optional[int] = ..., flows_dropped: _Optional[int] = ..., flows_active: _Optional[int] = ..., at: _Optional[int] = ...) -> None: ...

class AnalyzerMessage(_message.Message):
    __slots__ = ("welcome", "flows_ack", "start_capture", "stop_capture", "inject_packet", "stop_injection")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    FLOWS_ACK_FIELD_NUMBER: _ClassVar[int]
    START_CAPTURE_FIELD_NUMBER: _ClassVar[int]
    STOP_CAPTURE_FIELD_NUMBER: _ClassVar[int]
    INJECT_PACKET_FIELD_NUMBER: _ClassVar[int]
    STOP_INJECTION_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    flows_ack: FlowsAck
    start_capture: StartCapture
    stop_capture: StopCapture
    inject_packet: InjectPacket
    stop_injection: StopInjection
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., flows_ack: _Optional[_Union[FlowsAck, _Mapping]] = ..., start_capture: _Optional[_Union[StartCapture, _Mapping]] = ..., stop_capture: _Optional[_Union[StopCapture, _Mapping]] = ..., inject_packet: _Optional[_Union[InjectPacket, _Mapping]] = ..., stop_injection: _Optional[_Union[StopInjection, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("version", "software")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_FIELD_NUMBER: _ClassVar[int]
    version: int
    software: str
    def __init__(self, version: _Optional[int] = ..., software: _Optional[str] = ...) -> None: ...

class FlowsAck(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class StartCapture(_message.Message):
    __slots__ = ("capture_json", "node_id")
    CAPTURE_JSON_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    capture_json: bytes
    node_id: str
    def __init__(self, capture_json: _Optional[bytes] = ..., node_id: _Optional[str] = ...) -> None: ...

class StopCapture(_message.Message):
    __slots__ = ("capture_id", "node_id")
    CAPTURE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    capture_id: str
    node_id: str
    def __init__(self, capture_id: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...

class InjectPacket(_message.Message):
    __slots__ = ("injection_json", "node_id")
    INJECTION_JSON_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    injection_json: bytes
    node_id: str
    def __init__(self, injection_json: _Optional[bytes] = ..., node_id: _Optional[str] = ...) -> None: ...

class StopInjection(_message.Message):
    __slots__ = ("injection_id", "node_id")
    INJECTION_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    injection_id: str
    node_id: str
    def __init__(self, injection_id: _Optional[str] = ..., node_id: _Optional[str] = ...) -> None: ...
