"""Producers of topology mutations: the host node, network namespaces and
their netlink interfaces (`probes.netns`), Open vSwitch (`probes.ovs`).

Probes share one in-memory `topology.graph.Graph` and one asyncio loop; they
write through `probes.elements.Writer`, which keeps each probe to its own
metadata keys and maintains TIDs.
"""
