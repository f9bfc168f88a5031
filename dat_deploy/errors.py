"""Errors a user can act on.

Library code raises `UserError` with a message that names the file or value at fault and what to
do about it; the CLI prints that message on one line and exits with code 2 instead of a traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, explained in plain words."""

    exit_code = 2
