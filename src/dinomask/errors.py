"""Exceptions users can catch; each message says what was expected and what came instead."""


class DinomaskError(Exception):
    """Base class of every error dinomask raises on purpose."""


class ModelNotFoundError(DinomaskError):
    """Weights could not be found or read; the message says where it looked and the fix."""


class ImageReadError(DinomaskError):
    """An input could not be decoded as an image (missing, corrupt, unsupported)."""


class InvalidReferenceError(DinomaskError):
    """A reference image gives no usable object (all background, or smaller than a patch)."""


class ReferenceMismatchError(DinomaskError):
    """A saved reference was made with another backbone or settings than the one in use."""


class SourceError(DinomaskError):
    """A frame source (camera, stream, video) could not be opened or was lost for good."""


class OutputError(DinomaskError):
    """An output cannot be written where the user asked (read-only, not a folder, no space)."""


class RunCancelled(DinomaskError):
    """A backbone run was stopped from another thread before it finished (its result would have
    been for a scene the camera no longer shows); nothing is wrong, and nothing came of it."""
