"""``zoo worker`` (train queued runs), ``zoo requeue RUN``, and what ``zoo train --queue`` prints.

Thin: the queue lives in zoo.training.queue (claiming, planning, training) and zoo.store.queue (the rows).
"""

from __future__ import annotations

import time
from typing import List, Optional

import typer

from zoo.cli.app import app, open_registry, registry_location
from zoo.errors import ZooError


def queue_specs(run_specs: list, *, group: Optional[str]) -> None:
    """``zoo train ... --queue``: check the runs, record them as queued, say how to drain them."""
    from zoo.cli.progress import Display, plan_table
    from zoo.training.queue import check_queue, enqueue

    display = Display(False)
    checked = check_queue(run_specs, group=group)  # before the registry opens: a refused command creates nothing
    with open_registry() as reg:
        queued = enqueue(run_specs, reg, group=group, checked=checked)
    if len(queued.run_ids) > 1:
        display.out.print(plan_table([r.spec for r in queued.plan.runs], queued.plan.varied, queued.plan.group))
    ids = queued.run_ids
    shown = f"run {ids[0]}" if len(ids) == 1 else f"runs {ids[0]}-{ids[-1]}" if ids == list(
        range(ids[0], ids[-1] + 1)) else "runs " + ", ".join(map(str, ids))
    display.out.print(f"Queued {shown} (group {queued.plan.group}). Train them with `zoo worker` on any machine "
                      f"that sees registry {reg.location} and the data; `zoo list-runs --status queued` shows the "
                      "backlog.", markup=False, highlight=False)


@app.command("worker")
def worker(
    device: Optional[str] = typer.Option(None, "--device", metavar="DEVICE", show_default=False,
                                         help="Train every run on this device: cpu, cuda, cuda:N, mps (default: "
                                              "each run's own --device, auto unless given)."),
    max_runs: Optional[int] = typer.Option(None, "--max-runs", min=1, metavar="N", show_default=False,
                                           help="Stop after claiming N runs (default: when the queue is empty)."),
    wait: bool = typer.Option(False, "--wait", help="When the queue is empty, keep polling for new runs."),
    poll: float = typer.Option(5.0, "--poll", min=0.1, metavar="SECONDS", help="Seconds between polls with --wait."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings, errors and the final table."),
) -> None:
    """Train queued runs (`zoo train ... --queue`) one at a time until none is left; many workers may share a
    registry."""
    from zoo.cli.progress import Display, summary_table
    from zoo.errors import print_warning
    from zoo.spec import convert
    from zoo.training.queue import work

    if device is not None:
        device = convert("device", device)
    display = Display(quiet)

    idle = []

    def claimed(run) -> None:
        idle.clear()
        display.line(f"Claimed run {run.id} ({run.model}).")

    def waiting(seconds: float) -> None:
        if not idle:  # once per empty spell
            display.line(f"No queued runs: waiting for some (polling every {seconds:g} s; Ctrl-C stops).")
            idle.append(True)
        time.sleep(seconds)

    with open_registry() as reg:
        result = work(reg, display, device=device, max_runs=max_runs, wait=wait, poll_s=poll, on_claim=claimed,
                      sleep=waiting)
    display.stop()
    if result.outcomes:
        display.out.print(summary_table(result.outcomes))
    elif not result.failed_to_start and not result.stopped_by:
        display.out.print(f"No queued runs in registry {registry_location()}.", markup=False, highlight=False)
    if result.released is not None:
        print_warning(f"Run {result.released} was put back in the queue (stopped before it started training).")
    if result.stopped_by:
        word = "Terminated (SIGTERM)" if result.stopped_by == "SIGTERM" else "Interrupted"
        last = result.outcomes[-1] if result.outcomes and result.released is None else None
        print_warning(f"{word}: the worker stopped" + (f"; run {last.run_id} ({last.model}) recorded as "
                                                       f"{last.status} after {last.epochs_run} epoch(s)"
                                                       if last else "") + ".")
        raise typer.Exit(result.exit_code)
    if result.failed:
        from zoo.vocab import Status

        ids = [run_id for run_id, _ in result.failed_to_start] + [o.run_id for o in result.outcomes
                                                                    if o.status == Status.FAILED]
        raise ZooError(f"{result.failed} of {len(result.outcomes) + len(result.failed_to_start)} claimed run(s) "
                       f"failed ({', '.join(map(str, ids))}); `zoo show {ids[0]}` shows why.")


@app.command("requeue")
def requeue(
    runs: List[str] = typer.Argument(..., metavar="RUN", show_default=False,
                                     help="Run ids (stale, failed or interrupted) to put back in the queue."),
) -> None:
    """Put stale, failed or interrupted runs back in the queue for `zoo worker` (their history and metrics go)."""
    with open_registry(create=False) as reg:
        for ref in runs:
            run_id = reg.requeue(ref)
            typer.echo(f"Run {run_id} is queued again.")
