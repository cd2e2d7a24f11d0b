"""The flow table: packets in, flows out, on Skydive's update/expire cadence.

Owns the key -> flow map (an LRU capped at `flow.max_entries`, evictions
counted in `dropped`), the processing of a packet sequence (each tunnel
sub-packet's flow gets its outer flow's UUID as ParentUUID), and the
lifecycle of SPEC §1d: update ticks (`LastUpdateMetric` deltas, per
application timeouts, hold of finished flows), expire ticks, flush.
Pure: time comes from packet timestamps or from the `now` given to the
tick methods (an injected clock), never from the system clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator

from skygraph.capture.decoder import LINKTYPE_ETHERNET, DecoderConfig, Layer, decode, first_layer
from skygraph.capture.defrag import Defragmenter
from skygraph.capture.flowkey import Keys, keys
from skygraph.capture.flowstate import FlowState, new_flow, update
from skygraph.capture.options import HOLD_TIMEOUT_MS, CaptureOptions, TableSettings
from skygraph.capture.packet import SubPacket, View, split, view
from skygraph.topology.flow import FinishType, Flow, FlowMetric, IPMetric

# Skydive drops packets with neither a link nor a network layer.
LINK_OR_NETWORK = frozenset({"Ethernet", "LinuxSLL", "IPv4", "IPv6"})

PacketFilter = Callable[[bytes], bool]


class FlowTable:
    def __init__(self, opts: CaptureOptions | None = None,
                 settings: TableSettings | None = None, node_tid: str = "",
                 link_type: int = LINKTYPE_ETHERNET,
                 packet_filter: PacketFilter | None = None) -> None:
        self.opts = opts or CaptureOptions()
        self.settings = settings or TableSettings()
        self.node_tid = node_tid
        self.link_type = link_type
        self.packet_filter = packet_filter
        self.dropped = 0  # flows evicted by the LRU cap (Stats.FlowDropped)
        self.packets = 0  # packets fed to the table
        self._flows: OrderedDict[int, FlowState] = OrderedDict()
        self._cfg = DecoderConfig(self.opts.mpls_udp_port)
        self._first = first_layer(link_type)
        self._defrag = Defragmenter() if self.opts.ip_defrag else None
        self._last_update: int | None = None
        self._last_expire: int | None = None
        self._next_update: int | None = None
        self._next_expire: int | None = None

    # ---- packets ----------------------------------------------------------
    def feed(self, frame: bytes, ts_ns: int, wire_length: int | None = None) -> list[FlowState]:
        """Decode one captured frame and account it to its flow(s), outermost first."""
        layers = decode(frame, self.link_type, self._cfg, self._first)
        return self.feed_decoded(frame, layers, ts_ns, len(frame) if wire_length is None
                                 else wire_length)

    def feed_decoded(self, frame: bytes, layers: list[Layer], ts_ns: int,
                     wire_length: int) -> list[FlowState]:
        ip_metric: IPMetric | None = None
        if self._defrag is not None:
            done = self._defrag.process(frame, layers, ts_ns // 1_000_000, self.link_type,
                                        self._cfg)
            if done is None:
                return []
            rebuilt, layers, ip_metric = done
            if rebuilt is not frame:
                wire_length += len(rebuilt) - len(frame)
                frame = rebuilt
        if not any(layer.name in LINK_OR_NETWORK for layer in layers):
            return []
        if self.packet_filter is not None and not self.packet_filter(frame):
            return []
        self.packets += 1
        subs = split(layers, wire_length)
        parent = ""
        opts = self.opts
        l2 = opts.l2_mode
        flows = self._flows
        last = len(subs) - 1
        states: list[FlowState] = []
        for i, sub in enumerate(subs):
            v = view(sub.layers)
            k = keys(v, parent, l2)
            st = flows.get(k.key)
            if st is None:
                st = new_flow(sub, v, ts_ns, k, parent, self.node_tid, opts,
                              ip_metric if i == last else None)
                self._insert(st)
            else:
                flows.move_to_end(k.key)
            update(st, sub, v, ts_ns, frame, opts)
            parent = st.flow.uuid
            states.append(st)
        return states

    def feed_view(self, v: View, path: str, length: int, ts_ns: int,
                  frame: bytes, k: Keys | None = None) -> FlowState:
        """Account one decoded packet without tunnels (the batch path decodes it and
        may give its keys)."""
        if k is None:
            k = keys(v, "", self.opts.l2_mode)
        sub = SubPacket([], 0, length)
        st = self._flows.get(k.key)
        if st is None:
            st = new_flow(sub, v, ts_ns, k, "", self.node_tid, self.opts, path=path)
            self._insert(st)
        else:
            self._flows.move_to_end(k.key)
        update(st, sub, v, ts_ns, frame, self.opts)
        self.packets += 1
        return st

    def add(self, st: FlowState) -> None:
        """A flow built outside the packet path (NetFlow records); the LRU cap applies."""
        self._insert(st)

    def _insert(self, st: FlowState) -> None:
        if len(self._flows) >= self.settings.max_entries:
            self._flows.popitem(last=False)
            self.dropped += 1
        self._flows[st.key] = st

    # ---- queries ----------------------------------------------------------
    def __len__(self) -> int:
        return len(self._flows)

    def flows(self) -> list[Flow]:
        return [st.flow for st in self._flows.values()]

    def states(self) -> Iterator[FlowState]:
        return iter(self._flows.values())

    def get(self, key: int) -> FlowState | None:
        return self._flows.get(key)

    def touch(self, key: int) -> None:
        """Mark a flow most recently used (batch updates)."""
        self._flows.move_to_end(key)

    def next_due(self) -> int | None:
        """Packet time (ms) of the next update or expire tick; None before the first tick."""
        if self._next_update is None or self._next_expire is None:
            return None
        return min(self._next_update, self._next_expire)

    # ---- lifecycle ----------------------------------------------------------
    def tick(self, now_ms: int) -> list[Flow]:
        """Run whichever update/expire ticks are due at `now_ms`; return flows to send."""
        if self._next_update is None:
            self._next_update = now_ms + self.settings.update * 1000
            self._next_expire = now_ms + self.settings.expire * 1000
            self._last_expire = now_ms
            return []
        out: list[Flow] = []
        if now_ms >= self._next_update:
            out.extend(self.update_at(now_ms))
            self._next_update = now_ms + self.settings.update * 1000
        assert self._next_expire is not None
        if now_ms >= self._next_expire:
            out.extend(self.expire_at(now_ms))
            self._next_expire = now_ms + self.settings.expire * 1000
        return out

    def _window(self, st: FlowState, now_ms: int, since: int | None) -> None:
        """Set `LastUpdateMetric` to the metric delta since the previous update."""
        f = st.flow
        if st.updated:
            base = st.last_metric or FlowMetric()
            lum = f.metric.minus(base)
            lum.start = since if since is not None and st.last_metric is not None else f.start
            st.last_metric = f.metric.copy()
            st.updated = False
        else:
            lum = FlowMetric(start=since if since is not None else f.start)
        lum.last = now_ms
        f.last_update_metric = lum

    def _send(self, st: FlowState) -> Flow:
        out = st.flow.snapshot()
        st.flow.last_raw_packets = ()
        return out

    def update_at(self, now_ms: int) -> list[Flow]:
        """Update tick: send touched flows, time out idle applications, drop held flows."""
        since = self._last_update
        sent: list[Flow] = []
        timeouts = self.settings.application_timeout
        for key, st in list(self._flows.items()):
            f = st.flow
            touched = st.updated
            self._window(st, now_ms, since)
            if touched:
                sent.append(self._send(st))
            elif f.finish_type == FinishType.NOT_FINISHED:
                timeout = timeouts.get(f.application.upper())
                if timeout is not None and now_ms - f.last > timeout * 1000:
                    f.finish_type = FinishType.TIMEOUT
                    sent.append(self._send(st))
                    del self._flows[key]
                    continue
            if f.finish_type != FinishType.NOT_FINISHED and now_ms - f.last >= HOLD_TIMEOUT_MS:
                del self._flows[key]
        self._last_update = now_ms
        return sent

    def expire_at(self, now_ms: int) -> list[Flow]:
        """Expire tick: flows idle since before the previous expire tick end (TIMEOUT)."""
        cutoff = self._last_expire
        if cutoff is None:
            cutoff = now_ms - self.settings.expire * 1000
        sent: list[Flow] = []
        for key, st in list(self._flows.items()):
            f = st.flow
            if f.last < cutoff:
                self._window(st, now_ms, self._last_update)
                if f.finish_type == FinishType.NOT_FINISHED:
                    f.finish_type = FinishType.TIMEOUT
                sent.append(self._send(st))
                del self._flows[key]
        self._last_expire = now_ms
        return sent

    def flush(self) -> list[Flow]:
        """Every flow still in the table (end of capture); the table is emptied."""
        out = [st.flow for st in self._flows.values()]
        self._flows.clear()
        return out
