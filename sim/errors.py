"""The exception type for bad user input, and the warning type for suspicious input or results."""


class UserError(Exception):
    """Bad input from the user: the message says which file, which field, and what is allowed.

    The command line prints the message without a traceback; internal bugs stay tracebacks.
    """


class SimWarning(UserWarning):
    """Input or a result the user should look at, though it is not an error (an implausible
    trace, most requests rejected). The command line prints it as one ``warning:`` line."""
