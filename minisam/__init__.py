"""minisam: Segment Anything (Kirillov et al. 2023) rebuilt in NumPy and Numba.

Drop-in for the official ``segment_anything`` package: change the import, keep the code.

    from minisam import sam_model_registry, SamPredictor, SamAutomaticMaskGenerator

Names are imported lazily so that ``import minisam`` stays cheap (no Numba compilation).
"""

from importlib import import_module

# Before anything imports NumPy: OpenBLAS reads its spin setting when NumPy loads it
# (minisam/kernels/threads.py says why it matters).
from minisam.kernels.threads import shorten_blas_spin

shorten_blas_spin()

__version__ = "0.1.0"

from minisam.errors import (CheckpointError, ConfigError, DownloadError, ImageError,  # noqa: F401
                     MinisamError, MinisamWarning, NotSupportedError, PromptError, PromptWarning)

# Imported now, as the official __init__ does: ``minisam.build_sam`` is then the function, not
# the module of the same name (which pulls in no Numba).
from minisam.build_sam import (build_sam, build_sam_vit_b, build_sam_vit_h, build_sam_vit_l,  # noqa: E402,F401
                               sam_model_registry)

_LAZY = {
    "load_state_dict": "minisam.checkpoints.formats",
    "save_checkpoint": "minisam.checkpoints.formats",
    "Sam": "minisam.modeling.sam",
    "SamConfig": "minisam.config",
    "SamPredictor": "minisam.predictor",
    "SamAutomaticMaskGenerator": "minisam.automatic_mask_generator",
    "ResizeLongestSide": "minisam.utils.transforms",
    "set_num_threads": "minisam.kernels.threads",
    "thread_info": "minisam.kernels.threads",
}

__all__ = sorted(list(_LAZY) + ["build_sam", "build_sam_vit_b", "build_sam_vit_h", "build_sam_vit_l",
                                "sam_model_registry", "CheckpointError", "ConfigError", "DownloadError", "ImageError",
                                "MinisamError", "MinisamWarning", "NotSupportedError", "PromptError", "PromptWarning", "__version__"])


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'minisam' has no attribute {name!r}")


def __dir__():
    return __all__
