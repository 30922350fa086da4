"""The one user-facing error type.

Bad input (a malformed matrix file, an unknown dtype, a corrupt store file) raises
:class:`UserError`; the CLI turns it into one line on stderr and exit code 2. Bugs keep
their tracebacks, so nothing else should be caught at the top.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user. The message names the problem and, where possible, the fix."""

    exit_code = 2


class Unsupported(Exception):  # a verdict, not a failure
    """A cell that cannot run here (missing dtype, no CUDA device, no vLLM): recorded as skipped."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class StoreWarning(UserWarning):
    """A store problem that was handled (corrupt file quarantined, file skipped).

    The CLI prints each as one ``warning:`` line on stderr.
    """
