"""User-facing errors: one line naming the file, the key and what was expected.

Everything a user can get wrong (a spec, a command-line argument, a damaged
checkpoint) raises a :class:`UserError`; the command line prints its message on
one line and exits with status 2, without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """An error caused by input the user controls; printed as one line, exit code 2."""

    exit_code = 2


class SpecError(UserError):
    """A study file that does not describe a valid study.

    ``key`` is the dotted path of the offending key (``environments.bandit2.horizon``),
    or ``""`` for the file as a whole.
    """

    def __init__(self, file: str | Path, key: str, problem: str):
        self.file = str(file)
        self.key = key if key.isprintable() else repr(key)  # keys are shown on one line
        self.problem = " ".join(problem.split()) if not problem.isprintable() else problem
        where = f"{self.file}: {self.key}: " if key else f"{self.file}: "
        super().__init__(where + self.problem)


class ArtifactError(UserError):
    """A checkpoint, frozen model or table that is missing, truncated or altered."""

    def __init__(self, file: str | Path, problem: str):
        self.file = str(file)
        super().__init__(f"{file}: {problem}")


class FrozenModelChanged(RuntimeError):
    """A probe changed the weights of a frozen model: a bug in mesaprobe, never user input."""
