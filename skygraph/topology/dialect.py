"""Where Neo4j 5 and the embedded ArcadeDB server differ, in one table.

Everything else is written once, in Cypher both accept (Neo4j 5 syntax, no
APOC, no pattern expressions in `size()`), and the code takes the path that
works on both:

- Labels after creation: Neo4j adds and removes them; ArcadeDB raises
  ConstraintError (labels are the vertex type). skygraph CREATEs nodes with
  all their labels; a kind change re-creates the node and its edges (batch.py).
- Two transactions MERGE one unique key: Neo4j serialises them; ArcadeDB
  raises ConstraintError. The writer retries ConstraintError.
- MERGE on two labels: ArcadeDB does not use the constraint index (~200
  nodes/s). skygraph MERGEs only on the constrained label.
- Plain DELETE of a node with edges: ClientError on Neo4j, DatabaseError on
  ArcadeDB. skygraph archives and deletes the edges first.
- FULLTEXT indexes: ArcadeDB has none. skygraph uses RANGE indexes only.
- Auto-commit statements: ArcadeDB commits them row by row (a DETACH DELETE
  of 6,000 nodes takes 29 s, 0.5 s in a transaction). Every statement runs
  in a managed transaction.
- A label on the far end of a hop (`(n)<--(m:Node)`) makes ArcadeDB scan the
  label; the Gremlin translator writes `WHERE 'Node' IN labels(m)` instead.
- `LIMIT` roughly doubles the cost of small queries on ArcadeDB; the Gremlin
  result cap is checked on the records instead (`Limits.cap_in_query` for Neo4j).
- `NOT coalesce(c, false)` with a list predicate in `c` gives wrong answers on
  ArcadeDB; `coalesce(c, false) = false` is used.
- ArcadeDB evaluates list predicates even where `AND`/`CASE` should skip them;
  the iterable is always made a list first.
- `shortestPath(...)` with a WHERE on its relationships returns nothing on
  ArcadeDB; edge-filtered shortest paths use bounded variable-length matches
  ordered by length.
- Union types in `IS ::` are unsupported on ArcadeDB; not used.
- Index key types: ArcadeDB types an index's keys when it is created, from a
  node of the label that has the property (STRING when none has), and on
  STRING keys a range of integers scans the whole label. Bootstrap creates a
  throw-away node carrying the integer properties before their indexes and
  deletes it after (schema.INTEGER_INDEXED); an index created earlier keeps
  its STRING keys until it is dropped.
- An ArcadeDB index seek matches a value of the other type by its text
  (`Transport.A = '80'` finds port 80); the flow look-ups add a type test
  where the literal's type is not the field's (gremlin/lookups.py).
- An OR of indexed equalities is one union of index seeks on ArcadeDB, unless
  a plain indexed equality is in the same WHERE (then that one is sought and
  the OR tested on each flow): the flow look-ups keep one indexed condition
  in the MATCH and test the others after a WITH.
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
