"""Errors a user can act on. Each message is one line that names the problem."""


class VAEEdgeError(Exception):
    """Base class: bad input, a bad bundle or a bad request, never a bug in vae-edge."""


class InputError(VAEEdgeError, ValueError):
    """The data given to the model (array, file, option) is not acceptable."""


class BundleError(VAEEdgeError):
    """A model bundle is missing, malformed, tampered with or inconsistent."""


class InputWarning(UserWarning):
    """Input that is valid but probably not what the user meant."""
