"""The number of CPU threads torch's kernels use while a model computes.

A multi-threaded reduction or matrix product splits its sum between the threads, so its last bits depend on
how many threads there are: the same seed trained with 1 and with 2 threads drifts apart by ~1e-8 in the
first iteration, and the difference grows into different returns and α within tens of iterations. Load on
the machine does not change the bits, but the thread count that torch picks by default does (it is the
number of cores the process may use, or ``OMP_NUM_THREADS``). A model therefore fixes its own thread count
(``num_threads``, default 1) and computes with it, whatever the process's setting: the same seed and the
same ``num_threads`` give the same bits however many cores the machine has and however busy it is (another
CPU model or library version may still round differently: MKL picks its kernels by CPU).

One thread is the safe default: on this 2-core machine with one competing busy process, a Navigation2D
iteration took 4.9 s with 2 threads and 2.7 s with 1, and parallel runs or Ray workers each want one. An
idle machine computes faster with more (2 threads: 1.4 s against 2.4 s). ``num_threads=None`` uses the
process's setting instead.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with torch's intra-op thread count at ``num_threads`` (None: unchanged), then restore it."""
    previous = torch.get_num_threads()
    if num_threads is None or num_threads == previous:
        yield
        return
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def with_model_threads(method: F) -> F:
    """Decorate a model method so that it computes with the model's ``num_threads``."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with torch_threads(self.num_threads):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
