"""Packet capture: decoder, tunnel split, flow keys, flow table, BPF, pcap files and the
offline `skygraph flows` runner (batch path in `fastpath`)."""
