"""The seeds' target demonstration as documented (scripts/demo-erspan.sh): two
namespaces behind a bridge, a capture with an ERSPAN target on port 0 in a third
namespace, pings from the injector; the target receives exactly those pings,
decoded by tshark, and a capture on the target's interface shows the GRE flow
and, inside it, the injected flow with the TrackingID the injection announced."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import RUN_ID

pytestmark = [pytest.mark.root, pytest.mark.slow]
SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "demo-erspan.sh"


@pytest.mark.parametrize("target_type", ["erspanv1", "erspanv2"])
def test_erspan_demo(target_type: str) -> None:
    count = 3
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600,
                         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "COUNT": str(count),
                              "PREFIX": f"{RUN_ID}{target_type[-2:]}",
                              "TARGET_TYPE": target_type})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    injection = json.loads(re.search(r"^injection: (.*)$", text, re.M).group(1))
    frames = [line.split("\t") for line in text.splitlines() if line.startswith("eth:")]
    assert len(frames) == 2 * count
    for protocols, span, src, dst, _icmp_type, ident, _seq in frames:
        assert protocols == "eth:ethertype:ip:gre:erspan:eth:ethertype:ip:icmp"
        assert span == "7"
        assert int(ident) == injection["ICMPID"]
        assert src.split(",")[0] == "10.66.0.1" and dst.split(",")[0] == "10.66.0.2"
    assert sorted(f[4] for f in frames) == ["0"] * count + ["8"] * count
    assert f"mirrored ICMP echo frames: {2 * count}" in text
    blocks = text.split("== ")
    gre = json.loads(next(b for b in blocks if b.startswith("the GRE flow")).split("\n", 1)[1])
    assert [(f["Application"], f["Metric"]["ABPackets"]) for f in gre] == [("GRE", 2 * count)]
    inner = json.loads(next(b for b in blocks if b.startswith("the ICMP flow inside"))
                       .split("\n", 1)[1])
    assert [f["TrackingID"] for f in inner] == [injection["TrackingID"]]
    assert inner[0]["ParentUUID"] == gre[0]["UUID"]
    assert (inner[0]["Metric"]["ABPackets"], inner[0]["Metric"]["BAPackets"]) == (count, count)
