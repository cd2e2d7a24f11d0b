"""The agent <-> analyzer link over gRPC (see `agent.proto` for the conversation).

`client` is the agent's end, `server` the analyzer's, `codec` the pure
conversion between skygraph's values (`model`, topology elements and
mutations, flow JSON) and the protobuf messages; `tls` builds credentials.
The generated `agent_pb2*` modules are committed; `scripts/gen-protos.sh`
regenerates them.
"""
