"""``zoo train --resume RUN``: the checks before an interrupted or stale run goes on in its own row."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zoo.errors import ZooError
from zoo.spec import RunSpec
from zoo.training.session import ResumePoint
from zoo.vocab import STALE, Status, SYSTEM_TAG_PREFIX

if TYPE_CHECKING:
    from zoo.store.api import RunRecorder


def resume_point(registry: "RunRecorder", ref: Any) -> tuple[RunSpec, ResumePoint]:
    """The spec the run was trained with and where it stopped; a one-line ZooError (nothing changed) when the run
    is not interrupted or stale, or has no last.pt."""
    from zoo.checkpoint import CorruptFile, load_last

    run = registry.get_run(ref)
    if run.display_status not in (Status.INTERRUPTED.value, STALE):
        raise ZooError(f"Run {run.id} is {run.display_status}: only an interrupted or stale run can be resumed; "
                       f"start a new one with zoo train --from {run.id}.")
    last = registry.run_artifacts_dir(run.id) / "last.pt"
    if not last.is_file():
        raise ZooError(f"Run {run.id} has no {last} to resume from (it stopped before its first epoch ended, or "
                       f"was trained before zoo kept one); start a new run with zoo train --from {run.id}.")
    tags = tuple((k, v) for k, v in run.tags.items() if not k.startswith(SYSTEM_TAG_PREFIX))
    spec = RunSpec.from_params(run.params, run.model, name=run.name, tags=tags)
    try:
        state = load_last(last)
    except CorruptFile as exc:
        raise ZooError(f"Run {run.id} cannot be resumed: {exc.message.split(': delete it')[0]}; delete it and "
                       f"start a new run with zoo train --from {run.id}.") from None
    return spec, ResumePoint(run.id, state, run.dataset_fingerprint, seen=run)
