"""The edge where problems the user can fix become a message and an exit code (the one home of it).

Every invoke task in every namespace (tasks.py, tasks_lab.py, tasks_arm64.py) is declared with this
module's `task` instead of invoke's: it is invoke's `task` with the body wrapped in `user_errors`,
so a `UserError` ends as its one-line message and its `exit_code` (1 unless a subclass says
otherwise), and Ctrl-C as "interrupted" with code 130 (128 + SIGINT, as a shell reports it).
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, TypeVar

import invoke

from splicebench.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])

INTERRUPTED_EXIT_CODE = 130


def exit_for(error: BaseException) -> invoke.Exit:
    """The invoke.Exit that ends a task which raised `error` (a UserError or KeyboardInterrupt)."""
    if isinstance(error, KeyboardInterrupt):
        return invoke.Exit("interrupted", code=INTERRUPTED_EXIT_CODE)
    return invoke.Exit(str(error), code=getattr(error, "exit_code", 1))


def user_errors(body: F) -> F:
    """body, with UserError and KeyboardInterrupt turned into invoke.Exit (see exit_for).

    functools.wraps keeps the name, the docstring (the --help text) and, through __wrapped__, the
    signature that invoke reads the task's flags from."""

    @functools.wraps(body)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return body(*args, **kwargs)
        except (UserError, KeyboardInterrupt) as e:
            raise exit_for(e) from None

    return wrapper  # type: ignore[return-value]


def task(*args: Any, **kwargs: Any) -> Any:
    """invoke.task whose body is wrapped in user_errors; used as ``@task`` or ``@task(help=...)``."""
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return invoke.task(user_errors(args[0]))

    def decorate(body: Callable[..., Any]) -> invoke.Task:
        return invoke.task(*args, **kwargs)(user_errors(body))

    return decorate
