"""Run registry (SQLAlchemy 2.x; imports no torch): schema, migrations, lifecycle API and read queries."""

from zoo.store.registry import EvaluationView, Registry, RunView

__all__ = ["EvaluationView", "Registry", "RunView"]
