"""reuse_freed_memory: takes effect once on glibc, refuses quietly elsewhere."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from metasgd_rl import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="glibc only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    """Page faults (fresh pages the kernel zero-fills) during two meta-iterations of the standard Navigation2D
    setting: far fewer with the setting than without."""
    code = """
import resource, sys, torch
import metasgd_rl as msr
if sys.argv[1] == "reuse":
    assert msr.reuse_freed_memory() and msr.reuse_freed_memory()  # idempotent
torch.set_num_threads(2)
model = msr.MetaSGD("Navigation2D-v0", outer="adam", seed=0)
model.train_step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(2):
    model.train_step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""
    faults = {mode: int(subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                       check=True).stdout)
              for mode in ("default", "reuse")}
    assert faults["reuse"] < faults["default"] / 3, faults


def test_it_is_a_no_op_where_the_c_library_is_not_glibc(monkeypatch):
    monkeypatch.setattr(allocator, "_applied", False)
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.reuse_freed_memory() is False
