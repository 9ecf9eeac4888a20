"""The one error type users see.

Anything raised as `UserError` is a problem with the user's input that they can fix; the CLI prints its
message on one line and exits with code 2, without a traceback. Every other exception is a bug in
freezetune and keeps its traceback.
"""


class UserError(Exception):
    """A bad input: the message names the problem and the fix, in one line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (e.g. `kill`, a job scheduler's timeout), raised in the main thread so it unwinds like Ctrl-C:
    every `finally` runs, staging and scratch folders are removed. The CLI exits with 143 (128 + 15)."""
