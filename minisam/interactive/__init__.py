"""Interactive segmentation: click on an image, see SAM's masks and what the decoder did.

- :class:`ClickSession` (``session.py``): the state and the logic, driven by mouse and key
  events in image pixel coordinates; the window, the notebook widget and the tests share it.
- :class:`ClickView` (``view.py``): the session in a matplotlib figure (``minisam click``, or
  Jupyter with ``%matplotlib widget`` and ``pip install 'minisam[ui]'``).
- ``cache.py``: the image embedding cached on disk, keyed by the image's pixels and the model.

    from minisam import SamPredictor, sam_model_registry
    from minisam.interactive import ClickSession
    session = ClickSession(image, SamPredictor(sam_model_registry["micro"]()))
    session.show()
"""

from minisam.interactive.cache import embedding_cache_dir  # noqa: F401
from minisam.interactive.session import ClickSession, ClickState  # noqa: F401


def __getattr__(name):
    if name == "ClickView":  # imports matplotlib's pyplot: only when asked for
        from minisam.interactive.view import ClickView
        return ClickView
    raise AttributeError(f"module 'minisam.interactive' has no attribute {name!r}")
