"""The one error type users see: the command line prints its message on one line and exits 2."""


class MnistsweepError(Exception):
    """A problem the user can fix (bad spec, missing data, wrong path); never a bug."""
