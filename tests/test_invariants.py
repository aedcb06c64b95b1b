"""Invariants raise a named error (component, operator, values) even under ``python -O``."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sim.core.invariants import InvariantError
from sim.hw.interface import OpResult

REPO = Path(__file__).resolve().parents[1]

VIOLATION = """
import sys
assert False, "asserts are on"   # under -O this line does nothing
from sim.core.invariants import InvariantError
from sim.hw.interface import OpResult
try:
    OpResult(cycles=10, compute_cycles=8, stall_cycles=3, stall_memory=3,
             operator="gemm 8x8x8").check("toy-arch")
except InvariantError as e:
    print("optimize", sys.flags.optimize, type(e).__name__, e.component, "|", e.operator,
          "|", e.values)
    print(e)
"""


def test_a_violation_raises_under_python_O():
    out = subprocess.run([sys.executable, "-O", "-c", VIOLATION], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, message = out.stdout.splitlines()[:2]
    assert first.startswith("optimize 1 InvariantError toy-arch | gemm 8x8x8 |")
    assert "'cycles': 10" in first and "'compute_cycles': 8" in first
    assert message.startswith("toy-arch / gemm 8x8x8: invariant broken: cycles == compute + stall")


@pytest.mark.parametrize("fields, what", [
    (dict(cycles=5, compute_cycles=6, stall_cycles=-1, stall_memory=-1), "stall >= 0"),
    (dict(cycles=5, compute_cycles=3, stall_cycles=2, stall_memory=1), "memory + sram + drain"),
    (dict(cycles=4, compute_cycles=4, stall_cycles=0, macs=100, peak_macs_per_cycle=1.0),
     "utilization"),
    (dict(cycles=4, compute_cycles=4, stall_cycles=0, dram_busy_cycles=5), "DRAM and L2"),
    (dict(cycles=4, compute_cycles=4, stall_cycles=0, counters={"recon_busy_cycles": 9}),
     "no unit busy"),
])
def test_each_invariant_is_checked(fields, what):
    with pytest.raises(InvariantError, match=re.escape(what)) as e:
        OpResult(**fields).check("unit")
    assert e.value.component == "unit" and e.value.values
