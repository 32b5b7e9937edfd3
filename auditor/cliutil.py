"""What every ``vtaudit`` command shares: one error boundary and its exit codes."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from auditor.errors import AuditError

__all__ = ["boundary"]

F = TypeVar("F", bound=Callable[..., Any])


def boundary(command: F) -> F:
    """Turn our own errors into one clear line on stderr and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (AuditError, ValueError) as e:
            click.echo(f"vtaudit: error: {e}", err=True)
            sys.exit(2)
        except BrokenPipeError:  # the reader of our output went away (`| head`): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except Exception as e:  # a bug in vtaudit, never the evidence's fault: say so plainly
            if os.environ.get("VTAUDIT_DEBUG"):
                raise
            click.echo(
                f"vtaudit: internal error ({type(e).__name__}: {e}). This is a bug in vtaudit; "
                "run again with VTAUDIT_DEBUG=1 for the traceback and report it.",
                err=True,
            )
            sys.exit(3)

    return wrapper  # type: ignore[return-value]
