"""Errors that cpdm reports to the user as one clear line (no traceback)."""


class CpdmError(Exception):
    """A problem with the user's input or workspace, worded for the user.

    The CLI prints ``error: <message>`` to stderr and exits with status 1.
    """


class MissingWeightsError(CpdmError):
    """Real model weights are not on this machine; the message says how to get them."""
