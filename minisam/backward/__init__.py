"""Backward passes of SAM's per-prompt half, in NumPy: the prompt encoder and the mask decoder.

Each file mirrors the :mod:`minisam.modeling` file whose forward it differentiates. Every layer
has a ``*_forward`` that returns ``(output, cache)``, the saved tensors its backward needs, and
a ``*_backward`` beside it that takes the gradient of the output and the cache and returns the
gradients of the inputs and of the parameters. Parameter gradients are nested dicts keyed like
the parameters (so like the checkpoint). The derivation of each backward is in its docstring.

The forwards here compute in the dtype of their inputs (float32 for training, float64 for the
exact gradient checks of ``tests/test_backward.py``); in float32 they are tested equal to the
readable forwards of :mod:`minisam.modeling`.
"""
