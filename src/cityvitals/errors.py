"""Errors a user can act on. The CLI prints them as one line and exits 1."""


class CityvitalsError(Exception):
    """A failure with a message meant for the person at the terminal."""


class InputError(CityvitalsError):
    """The input (a file, a layer, an argument) is wrong; the message names what and where."""
