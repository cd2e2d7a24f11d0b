"""Where Neo4j 5 and the embedded ArcadeDB server differ, in one table.

Everything else is written once, in Cypher both accept (Neo4j 5 syntax, no
APOC, no pattern expressions in `size()`), and the code takes the path that
works on both:

| difference | Neo4j 5 | ArcadeDB 26 | what skygraph does |
|---|---|---|---|
| add/remove a label after creation | works | ConstraintError (labels are the vertex type) | nodes are CREATEd with all their labels; a kind change re-creates the node and its edges (batch.py) |
| two transactions MERGE one unique key | serialised | ConstraintError | the writer retries ConstraintError |
| MERGE on two labels | uses the index | does not use the constraint index (~200 nodes/s) | MERGE only on the constrained label |
| plain DELETE of a node with edges | ClientError | DatabaseError | edges are archived and deleted first |
| FULLTEXT indexes | yes | no | only RANGE indexes |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    server_agent: str


def detect(server_agent: str) -> Dialect:
    """Name the server from its Bolt agent string (`Neo4j/5.26.0 compatible (ArcadeDB …)`)."""
    name = "arcadedb" if "arcadedb" in server_agent.lower() else "neo4j"
    return Dialect(name, server_agent)
