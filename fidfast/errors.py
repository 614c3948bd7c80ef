"""User-facing errors: the CLI prints their message as one line on stderr and exits with code 2."""


class FidfastError(ValueError):
    """Bad input or setup that the user can fix (missing path, bad statistics file, no weights...)."""
