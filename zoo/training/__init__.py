"""The training service: plan a command's runs (every check before any work), then run them in a session.

Callers (the CLI, tests, a queue worker) build ``RunSpec``s, call ``make_plan`` and ``Session(plan, ...).run()``,
and render what the ``Reporter`` tells them. Nothing here imports Typer or rich.
"""

from zoo.training.plan import DataSource, Plan, PlannedRun, check_specs, make_plan
from zoo.training.session import (EXIT_CTRL_C, EXIT_SIGTERM, Reporter, RunContext, RunOutcome, Session,
                                  SessionResult, Terminated, train_run)

__all__ = ["DataSource", "Plan", "PlannedRun", "check_specs", "make_plan", "EXIT_CTRL_C", "EXIT_SIGTERM",
           "Reporter", "RunContext", "RunOutcome", "Session", "SessionResult", "Terminated", "train_run"]
