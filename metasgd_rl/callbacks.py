"""Training callbacks in the spirit of SB3's: hooks at the start, after every meta-iteration, at the end.

The hooks get the model being trained (a :class:`~metasgd_rl.model.MetaSGD` or :class:`~metasgd_rl.model.MAML`,
with all of its API) but this module does not import it: the model imports the callbacks, not the reverse.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

#: the model being trained: a MetaSGD (or MAML). ``Any`` so that a subclass may annotate its hooks with the
#: class it trains, or with nothing, without importing the model here
Model = Any
IterationInfo = dict[str, Any]


class BaseCallback:
    """Subclass and override the hooks; ``on_iteration_end`` returning ``False`` stops training."""

    def on_training_start(self, model: Model) -> None:
        pass

    def on_iteration_end(self, model: Model, info: IterationInfo) -> bool:
        return True

    def on_training_end(self, model: Model) -> None:
        pass


class FunctionCallback(BaseCallback):
    """Wraps ``fn(info) -> bool | None``; only an explicit ``False`` stops training."""

    def __init__(self, fn: Callable[[IterationInfo], bool | None]):
        self.fn = fn

    def on_iteration_end(self, model: Model, info: IterationInfo) -> bool:
        return self.fn(info) is not False


class CallbackList(BaseCallback):
    """Runs several callbacks in order; training stops if any of them asks to."""

    def __init__(self, callbacks: Iterable[BaseCallback]):
        self.callbacks = list(callbacks)

    def on_training_start(self, model: Model) -> None:
        for cb in self.callbacks:
            cb.on_training_start(model)

    def on_iteration_end(self, model: Model, info: IterationInfo) -> bool:
        return all([cb.on_iteration_end(model, info) for cb in self.callbacks])

    def on_training_end(self, model: Model) -> None:
        for cb in self.callbacks:
            cb.on_training_end(model)


CallbackLike = BaseCallback | Callable[[IterationInfo], bool | None] | Iterable[Any] | None


def as_callback(callback: CallbackLike) -> BaseCallback:
    """Accept a BaseCallback, a plain function of the iteration info, a list of either, or None."""
    if callback is None:
        return BaseCallback()
    if isinstance(callback, BaseCallback):
        return callback
    if callable(callback):
        return FunctionCallback(callback)
    if isinstance(callback, Iterable):
        return CallbackList(as_callback(cb) for cb in callback)
    raise TypeError(f"callback must be a BaseCallback, a function or a list of them, got {type(callback).__name__}")
