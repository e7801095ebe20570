"""The ``tfmi`` command-line application (click). Thin: parse options, call tfmi, print."""
