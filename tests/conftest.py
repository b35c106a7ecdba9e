"""Test-session settings: one torch thread.

The suite's models are tiny; with several threads their small matrix products spend more time synchronising
than computing, and become many times slower when another process shares the CPU.
"""

import torch

torch.set_num_threads(1)
