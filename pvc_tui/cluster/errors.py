"""Errors raised by the cluster library. Every message is one line, fit for an operator."""

from __future__ import annotations


class PvcError(Exception):
    """Base class: the operation did not happen or did not succeed."""

    exit_code = 1


class InvalidRequest(PvcError):
    """Bad input: nothing was changed."""

    exit_code = 2


class NotFound(InvalidRequest):
    """A named node or VM does not exist."""


class AlreadyExists(InvalidRequest):
    """A VM with that name or UUID is already defined."""


class ConflictError(PvcError):
    """Another writer changed the record first, too many times in a row."""


class ClusterUnavailable(PvcError):
    """ZooKeeper could not be reached within the timeout."""


class OperationFailed(PvcError):
    """The agent reported that the requested state could not be reached."""


class WaitTimeout(PvcError):
    """The outcome was not reported within the wait timeout (the request stands)."""


class Refused(PvcError):
    """The request is well-formed but the cluster's state does not allow it now."""


class NotAllowed(PvcError):
    """ZooKeeper's access control refused it to the credentials in use."""
