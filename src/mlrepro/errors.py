"""Errors that mean the user asked for something this machine or input cannot give."""


class UsageError(Exception):
    """A bad argument or input. The CLI prints the message, without a traceback, and exits 2.

    The message names the value and gives the fix.
    """


class CheckFailed(Exception):
    """A workload ran but a check failed (no usable GPU with --require-gpu, a GPU result off
    the CPU's). The CLI prints the summary and the message, and exits 1."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary
