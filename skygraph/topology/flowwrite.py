"""The Cypher and the parameters of a batch of flow updates (flowstore.py runs
them in one transaction); the graph model is flowschema.py's.

Shaped by what the write costs on the server, measured with
benchmarks/store_write.py:
- one `SET` per written record: the embedded server (ArcadeDB) saves a record,
  and updates every index on it, once per SET item, and a flow has 17 indexed
  properties, so `SET f = r.props, f.UpdatedAt = $now` cost 2-3 times
  `SET f = r.props` with the write time already in the map;
- each statement is sent only the fields it reads (the flow rows are not sent
  with their samples and packets).
Pure: no I/O, the write time comes in as an argument.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from skygraph.topology.flowschema import FLOW, METRIC, UPDATED_AT
from skygraph.topology.schema import ARCHIVE_KEY, HAS_METRIC, quote

Row = dict[str, Any]

# rows: upsert_rows(). An update older than the stored one is skipped (and so
# does not extend the flow's retention).
UPSERT = (
    f"UNWIND $rows AS r MERGE (f:{FLOW} {{UUID: r.UUID}}) "
    "WITH f, r WHERE f.Last IS NULL OR r.Last > f.Last OR "
    "(r.Last = f.Last AND r.tick >= coalesce(f.`LastUpdateMetric.Last`, 0)) "
    "SET f = r.props"
)
# rows: sample_rows() (one per key). Each sample is written once, under its flow
# (written or merged by UPSERT in the same transaction), with the write's time for
# the retention. (An OPTIONAL MATCH of the key, then a CREATE of the sample with its
# link, measured no faster than these MERGEs: 2.6k against 2.7k flow updates/s.)
WRITE_SAMPLES = (
    f"UNWIND $rows AS r MATCH (f:{FLOW} {{UUID: r.UUID}}) "
    f"MERGE (m:{METRIC} {{{ARCHIVE_KEY}: r.key}}) ON CREATE SET m = r.props "
    f"MERGE (f)-[:{quote(HAS_METRIC)}]->(m)"
)


def upsert_rows(rows: Iterable[Mapping[str, Any]], now: int) -> list[Row]:
    """UPSERT's rows of `flowschema.write_row` rows: what orders updates and the
    properties, stamped with the write time `now` (ms)."""
    return [{"UUID": r["UUID"], "Last": r["Last"], "tick": r["tick"],
             "props": {**r["props"], UPDATED_AT: now}} for r in rows]


def sample_rows(samples: Iterable[Mapping[str, Any]], now: int) -> list[Row]:
    """WRITE_SAMPLES' rows of `flowschema.metric_sample` rows, stamped with `now`:
    one per key, the first (an update replayed within the batch adds nothing)."""
    out: dict[str, Row] = {}
    for s in samples:
        if s["key"] not in out:
            out[s["key"]] = {"UUID": s["UUID"], "key": s["key"],
                             "props": {**s["props"], UPDATED_AT: now}}
    return list(out.values())
