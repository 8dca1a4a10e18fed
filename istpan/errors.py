"""Errors a user can fix: the CLI prints them as one line instead of a traceback."""

__all__ = ["UserError"]


class UserError(Exception):
    """A problem with the user's input (file, config, checkpoint, dataset) with a message that says what to do."""
