"""The one place that defines the errors `build-web` reports to its user."""


class BuildError(Exception):
    """A problem with the user's input: printed as one line, exit status 1, nothing written."""
