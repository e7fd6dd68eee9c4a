"""anyformer: anything that can be tokenized can be fed into a transformer.

One core transformer (``anyformer.core``) behind per-domain tokenizers: ``anyformer.text``,
``anyformer.vision``, ``anyformer.speech`` and ``anyformer.rl``. The Python entry point is
:func:`load`, which turns a checkpoint written by ``anyformer <task> fit`` into a model with
text-, image- or audio-level methods::

    import anyformer
    model = anyformer.load("runs/gpt_demo/checkpoints/last.ckpt")
    print(model.generate("ROMEO:", max_new_tokens=40))
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["__version__", "load"]

if TYPE_CHECKING:
    from anyformer.api import Model


def load(path: Any, **kwargs: Any) -> Model:
    """Load a trained task from a checkpoint (see :func:`anyformer.api.load`)."""
    from anyformer.api import load as _load  # torch and Lightning load only when used

    return _load(path, **kwargs)
