"""Queued training: ``enqueue`` checks a command's specs and records them as 'queued' runs; ``work`` claims them
one at a time and trains each through the same plan and session as ``zoo train``, in the run's own row.

A queued run's params are the spec's options as the user gave them ('auto' device and precision stay 'auto'),
with ``data`` a dataset name or an absolute folder (every worker must see that path) and ``resolved_device`` /
``resolved_precision`` empty until a worker trains it, so ``RunSpec.from_params`` rebuilds the spec exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Optional

from zoo.spec import RESOLVED_KEYS, RunSpec
from zoo.training.plan import Plan, check_specs, make_plan
from zoo.training.session import Reporter, RunOutcome, Session, error_text, sigterm_as_interrupt
from zoo.vocab import FROM_TAG, GROUP_TAG, SYSTEM_TAG_PREFIX, Status, StopReason

if TYPE_CHECKING:
    from zoo.store.api import RunQueue


@dataclass
class Queued:
    plan: Plan  # the checked runs (specs as recorded)
    run_ids: list[int]


def check_queue(specs: list[RunSpec], *, group: Optional[str] = None) -> Plan:
    """Every check that does not depend on the machine that will train (models, sizes, split, --weights, data
    found); opens no registry, so a refused command creates nothing."""
    from zoo.data import resolve_data

    # This machine may have no GPU: check the rest with the device left to the worker.
    checked = check_specs([replace(s, device="cpu", precision="fp32") for s in specs], group=group)
    located: dict[str, str] = {}
    runs = []
    for given, planned in zip(specs, checked.runs):
        if planned.spec.data not in located:
            root, name = resolve_data(planned.spec.data)
            located[planned.spec.data] = name or str(root)
        runs.append(replace(planned, spec=replace(planned.spec, data=located[planned.spec.data],
                                                  device=given.device, precision=given.precision)))
    checked.runs = runs
    return checked


def enqueue(specs: list[RunSpec], registry: "RunQueue", *, group: Optional[str] = None,
            checked: Optional[Plan] = None) -> Queued:
    """``check_queue`` (unless ``checked`` holds its result), then one 'queued' row per run. Device and precision
    are resolved by the worker that claims it."""
    from zoo.training.plan import check_artifacts

    checked = checked or check_queue(specs, group=group)
    check_artifacts(registry)
    ids = []
    for planned in checked.runs:
        spec = planned.spec
        tags = dict(spec.tags)
        tags[GROUP_TAG] = checked.group
        if spec.parent is not None:
            tags[FROM_TAG] = str(spec.parent)
        ids.append(registry.queue_run(model=spec.model, plugin=planned.info.plugin, params=queued_params(spec),
                                      name=spec.name, tags=tags))
    return Queued(checked, ids)


def queued_params(spec: RunSpec) -> dict[str, Any]:
    """The params row of a queued run: the options as given, nothing resolved yet."""
    return {**spec.options(), **{key: None for key in RESOLVED_KEYS}}


def spec_of(claimed: Any, *, device: Optional[str] = None) -> RunSpec:
    """The spec a claimed run's params, name and tags describe; ``device``: the worker's --device, if given."""
    tags = tuple((k, v) for k, v in claimed.tags.items() if not k.startswith(SYSTEM_TAG_PREFIX))
    parent = claimed.tags.get(FROM_TAG)
    overrides: dict[str, Any] = {"name": claimed.name, "tags": tags,
                                 "parent": int(parent) if parent and parent.isdigit() else None}
    if device:
        overrides["device"] = device
    return RunSpec.from_params(claimed.params, claimed.model, **overrides)


@dataclass
class WorkResult:
    outcomes: list[RunOutcome] = field(default_factory=list)  # runs trained (whatever their result)
    failed_to_start: list[tuple[int, str]] = field(default_factory=list)  # (run id, error): failed before training
    stopped_by: Optional[str] = None  # 'Ctrl-C' | 'SIGTERM'
    released: Optional[int] = None  # a claimed run put back in the queue because the worker stopped first

    @property
    def failed(self) -> int:
        return len(self.failed_to_start) + sum(o.status == Status.FAILED for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        if self.stopped_by:
            return 143 if self.stopped_by == "SIGTERM" else 130
        return 1 if self.failed else 0


def work(registry: "RunQueue", reporter: Optional[Reporter] = None, *, device: Optional[str] = None,
         max_runs: Optional[int] = None, wait: bool = False, poll_s: float = 5.0,
         on_claim: Callable[[Any], None] = lambda claimed: None, sleep: Callable[[float], None] = time.sleep,
         ) -> WorkResult:
    """Claim and train queued runs until none is left (``wait``: poll every ``poll_s`` instead), ``max_runs`` have
    been claimed, or Ctrl-C/SIGTERM. A run that cannot start here (its data missing on this machine, an unknown
    model) is recorded 'failed' with the reason and the worker goes on."""
    reporter = reporter or Reporter()
    with sigterm_as_interrupt():  # SIGTERM while idle or planning stops the worker as cleanly as during a run
        return _work(registry, reporter, device, max_runs, wait, poll_s, on_claim, sleep)


def _work(registry: "RunQueue", reporter, device, max_runs, wait, poll_s, on_claim, sleep) -> WorkResult:
    result = WorkResult()
    claimed_count = 0
    while max_runs is None or claimed_count < max_runs:
        try:
            claimed = registry.claim_queued()
            if claimed is None:
                if not wait:
                    break
                sleep(poll_s)
                continue
        except KeyboardInterrupt as exc:
            result.stopped_by = "SIGTERM" if type(exc).__name__ == "Terminated" else "Ctrl-C"
            break
        claimed_count += 1
        on_claim(claimed)
        try:
            spec = spec_of(claimed, device=device)
            plan = make_plan([spec], registry, group=claimed.tags.get(GROUP_TAG))
            session = Session(plan, registry, reporter, claimed={0: claimed.id})
            outcome = session.run()
        except KeyboardInterrupt as exc:  # while planning: nothing started
            registry.release_claimed(claimed.id)
            result.released, result.stopped_by = claimed.id, ("SIGTERM" if type(exc).__name__ == "Terminated"
                                                              else "Ctrl-C")
            break
        except Exception as exc:  # bad data here, unknown model, undecodable images: recorded, go on
            error = error_text(exc)
            registry.finish_run(claimed.id, Status.FAILED.value, stop_reason=StopReason.ERROR.value, error=error)
            result.failed_to_start.append((claimed.id, error))
            reporter.on_warning(f"Run {claimed.id} ({claimed.model}) failed before training: {error}")
            continue
        result.outcomes.extend(outcome.outcomes)
        if outcome.stopped_by:
            if not outcome.outcomes:  # stopped while decoding images: the run never started
                registry.release_claimed(claimed.id)
                result.released = claimed.id
            result.stopped_by = outcome.stopped_by
            break
    return result


__all__ = ["Queued", "WorkResult", "enqueue", "queued_params", "spec_of", "work"]
