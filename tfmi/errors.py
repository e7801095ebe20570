"""The one exception type tfmi raises for bad input."""


class TfmiError(ValueError):
    """Bad input: the message is one line saying what is wrong and how to fix it.

    The CLI turns it into ``Error: <message>`` and exit code 2, without a traceback.

    >>> raise TfmiError("labels must be integers 0..9; found -1 (fix the label column)")
    Traceback (most recent call last):
    ...
    tfmi.errors.TfmiError: labels must be integers 0..9; found -1 (fix the label column)
    """


def first_line(error: BaseException, fallback: str | None = None) -> str:
    """The first non-empty line of an exception's message, else ``fallback`` (default its type name):
    what a one-line `TfmiError` quotes from a library's multi-line error.

    >>> first_line(ValueError("\\n  bad header  \\n details"))
    'bad header'
    >>> first_line(KeyError(), "bad header")
    'bad header'
    """
    message = getattr(error, "message", None) or str(error)
    for line in message.splitlines():
        if line.strip():
            return line.strip()
    return fallback if fallback is not None else type(error).__name__
