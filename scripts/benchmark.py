"""Time meta-iterations stage by stage, their scaling with tasks and episodes, and sampler throughput.

    python scripts/benchmark.py                                    # Navigation2D, 20 x 20, TRPO / Adam / PPO
    python scripts/benchmark.py --outer trpo --tasks 10 20 40 80   # scaling with the number of tasks
    python scripts/benchmark.py --outer adam --sampler local ray --throughput HalfCheetahVel-v0 --out bench_results

The same as ``metasgd-rl benchmark`` (see ``metasgd-rl benchmark --help`` and :mod:`metasgd_rl.benchmark`).
"""

from __future__ import annotations

import sys

from metasgd_rl.cli import main

if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
