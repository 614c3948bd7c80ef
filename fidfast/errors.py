"""User-facing errors and warnings: the CLI prints an error's message as one line on stderr and exits
with code 2; a warning names the caller's line, not fidfast's."""
from __future__ import annotations

import os
import sys
import warnings


class FidfastError(ValueError):
    """Bad input or setup that the user can fix (missing path, bad statistics file, no weights...)."""


class PathError(FidfastError, RuntimeError):
    """A path that does not exist or must not: a RuntimeError too, as pytorch-fid raises there."""


class MetricError(FidfastError, RuntimeError):
    """A metric's ``compute()`` that its images cannot give (too few): a RuntimeError too, as torchmetrics
    raises there."""


class ArgumentTypeError(FidfastError, TypeError):
    """An argument of the wrong type where the API fidfast stands in for raises TypeError (torchmetrics'
    ``feature``): a TypeError too."""


class RankError(FidfastError):
    """A failure of one rank's own share of the work under torch.distributed; says which rank."""

    def __init__(self, rank: int, error: FidfastError) -> None:
        super().__init__(f"rank {rank}: {error}")
        self.rank = rank


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn(message: str, category: type = UserWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside fidfast (the user's own line)."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
