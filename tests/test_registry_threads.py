"""The registry's first use from several threads at once sees every installed family."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_concurrent_first_lookups_all_find_the_family():
    """Each thread resolves an entry-point family while the registry is still loading (a fresh process, so
    nothing is loaded yet): none may see a partial registry."""
    code = textwrap.dedent("""
        from concurrent.futures import ThreadPoolExecutor
        import metasgd_rl as msr
        with ThreadPoolExecutor(8) as pool:
            families = list(pool.map(lambda _: msr.make_task_family("Navigation2D-v0").id, range(8)))
        print(families.count("Navigation2D-v0"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "8"
