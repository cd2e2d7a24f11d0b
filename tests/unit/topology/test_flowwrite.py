"""The statements and rows of a batch of flow updates (flowwrite.py)."""

from skygraph.topology.flowschema import write_row
from skygraph.topology.flowwrite import sample_rows, upsert_rows

FLOW = {"UUID": "f1", "Start": 1000, "Last": 2000, "NodeTID": "tid-1", "ParentUUID": "p1",
        "Network": {"Protocol": "IPV4", "A": "10.0.0.1", "B": "10.0.0.2"},
        "LastUpdateMetric": {"ABPackets": 1, "Start": 1000, "Last": 2000}}


def test_rows_carry_the_write_time_and_only_what_the_statement_reads():
    row = write_row(FLOW, "agent1", now_ms=5)
    [up] = upsert_rows([row], now=99)
    assert set(up) == {"UUID", "Last", "tick", "props"}
    assert (up["props"]["UpdatedAt"], up["props"]["Network.A"], up["tick"]) == (99, "10.0.0.1",
                                                                            2000)
    [sample] = sample_rows([row["sample"]], now=99)
    assert (sample["key"], sample["props"]["UpdatedAt"], sample["props"]["_key"]) == (
        "f1/2000", 99, "f1/2000")
    # the caller's rows are left as they were (a retried batch is stamped again)
    assert row["props"]["UpdatedAt"] == 5 and row["sample"]["props"].get("UpdatedAt") is None



def test_an_update_replayed_within_a_batch_adds_one_sample():
    row = write_row(FLOW, "agent1", now_ms=5)
    later = write_row({**FLOW, "Last": 3000, "LastUpdateMetric": {"Start": 2000, "Last": 3000}},
                      "agent1", now_ms=5)
    samples = sample_rows([row["sample"], later["sample"], row["sample"]], now=9)
    assert [s["key"] for s in samples] == ["f1/2000", "f1/3000"]
