"""Packet capture: decoder, tunnel split, flow keys, flow table, BPF, pcap files and the
offline `skygraph flows` runner (batch path in `fastpath`); live afpacket captures
(`afpacket` ring, `live` capture, `manager` of the agent's captures)."""
