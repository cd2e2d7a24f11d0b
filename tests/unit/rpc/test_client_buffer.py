"""The agent's flow buffer while no analyzer is reachable: bounded, oldest
dropped first and counted per capture; mutations dropped (the next Sync
carries them)."""

from __future__ import annotations

import asyncio

import pytest

from skygraph.rpc.client import AnalyzerClient
from skygraph.rpc.model import Command
from skygraph.topology.model import Node
from skygraph.topology.mutations import NodeAdded


async def ignore(_: Command) -> None:
    return None


def client(bound: int) -> AnalyzerClient:
    return AnalyzerClient("127.0.0.1:1", "h1", snapshot=lambda: ([], []), on_command=ignore,
                          max_buffered_flows=bound)


def test_flows_over_the_bound_drop_the_oldest_and_count() -> None:
    c = client(3)
    c.flows("c1", [{"UUID": "1"}, {"UUID": "2"}])
    c.flows("c2", [{"UUID": "3"}, {"UUID": "4"}, {"UUID": "5"}])
    assert c.buffered_flows == 3
    assert c.counters.flows_dropped == 2
    assert (c.dropped_flows("c1"), c.dropped_flows("c2")) == (2, 0)
    assert [cap for cap, _ in c._flows] == ["c2", "c2", "c2"]


def test_mutations_while_disconnected_are_dropped() -> None:
    c = client(3)
    asyncio.run(c.mutation(NodeAdded(Node("n", {"Name": "n", "Type": "veth"}))))
    assert c.counters.mutations_dropped == 1 and not c._mutations


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="max_buffered_flows: must be positive"):
        client(0)
    with pytest.raises(ValueError, match="analyzers: at least one"):
        AnalyzerClient([], "h", snapshot=lambda: ([], []), on_command=ignore)
