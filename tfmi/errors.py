"""The one exception type tfmi raises for bad input."""


class TfmiError(ValueError):
    """Bad input: the message is one line saying what is wrong and how to fix it.

    The CLI turns it into ``Error: <message>`` and exit code 2, without a traceback.

    >>> raise TfmiError("labels must be integers 0..9; found -1 (fix the label column)")
    Traceback (most recent call last):
    ...
    tfmi.errors.TfmiError: labels must be integers 0..9; found -1 (fix the label column)
    """
