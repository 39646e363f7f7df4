"""The one exception type for bad user input (scenario files, traces, command-line values)."""


class UserError(Exception):
    """Bad input from the user: the message says which file, which field, and what is allowed.

    The command line prints the message without a traceback; internal bugs stay tracebacks.
    """
