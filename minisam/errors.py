"""minisam's own exception types.

Every refusal of bad input raises one of these, with a message that names the problem
(the key, the shape, the file), so that a user never gets a bare traceback from deep
inside NumPy or a silently wrong mask.
"""


class MinisamError(Exception):
    """Base class of every error minisam raises on purpose."""


class CheckpointError(MinisamError, ValueError):
    """A checkpoint file or state dict that cannot be loaded: names the file and the problem."""


class ConfigError(MinisamError, ValueError):
    """A model configuration that does not fit the tensors, or an unknown model name."""


class ImageError(MinisamError, ValueError):
    """An image that cannot be used: wrong shape, dtype, mode, or not an image at all."""


class PromptError(MinisamError, ValueError):
    """A point, label, box or mask prompt that is malformed."""


class DownloadError(MinisamError, OSError):
    """A weights download that failed: HTTP error, broken connection or checksum mismatch."""


class NotSupportedError(MinisamError, NotImplementedError):
    """An official API that minisam does not provide (the README's drop-in section lists them)."""


class MinisamWarning(UserWarning):
    """Base class of minisam's warnings: input used as given that is probably a mistake."""


class PromptWarning(MinisamWarning):
    """A prompt minisam uses as given (the official code does) but that is probably a mistake."""
