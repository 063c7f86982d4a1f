"""Errors the user can fix.

Every problem that a user can act on (a bad scenario file, a missing tool, a failed build, a run
directory that does not exist) is raised as a `UserError` subclass with a message that says what is
wrong and, where possible, what to do next. cli/edge.py catches `UserError` once, for every task,
and turns it into `invoke.Exit(message)` with the error's `exit_code` (1 unless a subclass sets
another); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; str(error) is the complete message."""


class ScenarioError(UserError):
    """A scenario file that cannot be read or does not validate."""


class HostError(UserError):
    """A host that cannot be reached or a command on it that failed."""


class CommandFailed(HostError):
    """A command exited non-zero (or timed out) while its success was required."""

    def __init__(self, host: str, argv: list[str], returncode: int | None, stdout: str, stderr: str):
        self.host = host
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        what = "timed out" if returncode is None else f"exited with code {returncode}"
        last = tail(stderr) or tail(stdout)
        msg = f"host {host}: `{_show(argv)}` {what}"
        if last:
            msg += ":\n" + last
        super().__init__(msg)


class ProcError(HostError):
    """A background program exited or stayed silent where an event was expected."""


class ProvisionError(UserError):
    """Build dependencies are missing and cannot be installed here."""


class BuildError(UserError):
    """Building the data-path programs failed."""


class ResultsError(UserError):
    """A run directory is missing or unreadable."""


def _show(argv: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in argv)


def tail(text: str, lines: int = 15) -> str:
    """The last `lines` non-blank lines of a program's output, for error messages."""
    rows = [r for r in (text or "").rstrip().splitlines() if r.strip()]
    return "\n".join(rows[-lines:])


class PreflightError(UserError):
    """A host's limits (open files, ports, ...) cannot hold what the scenario needs; one line per problem."""


class ProgramUsageError(UserError):
    """A program refused its command line (exit status 2): the same for every sample, so the run stops."""

    exit_code = 2
