"""The bpf() wrapper's pure parts: error wording, the verifier log summary,
per-CPU values."""

from __future__ import annotations

import errno
import struct
from pathlib import Path

from skygraph.capture.ebpf_sys import EBPFError, per_cpu_sum, possible_cpus, verifier_summary

LOG = """func#0 @0
0: R1=ctx() R10=fp0
0: (bf) r6 = r1                       ; R1=ctx() R6_w=ctx()
1: (61) r0 = *(u32 *)(r6 +76)
invalid bpf_context access off=76 size=4
processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
"""


def test_errors_say_what_failed_and_why() -> None:
    assert str(EBPFError(errno.ENOSYS, "loading BPF program p")).endswith(
        "loading BPF program p: this kernel has no bpf() system call")
    assert "not permitted (needs root, or CAP_BPF" in str(EBPFError(errno.EPERM, "creating map"))
    assert EBPFError(errno.E2BIG, "creating BPF map m").strerror == \
        "creating BPF map m: Argument list too long"
    refused = EBPFError(errno.EACCES, "loading BPF program p", LOG, "the verifier said no")
    assert refused.strerror == "loading BPF program p: the verifier said no" and refused.log == LOG


def test_verifier_summary_keeps_the_last_lines_without_the_footer() -> None:
    assert verifier_summary(LOG, lines=2) == \
        "1: (61) r0 = *(u32 *)(r6 +76) | invalid bpf_context access off=76 size=4"
    assert verifier_summary("") == ""


def test_per_cpu_values(tmp_path: Path) -> None:
    possible = tmp_path / "possible"
    possible.write_text("0-3,6,8-9\n")
    assert possible_cpus(str(possible)) == 7
    assert per_cpu_sum(struct.pack("=3Q", 5, 0, 7)) == 12
