"""Run registry (SQLAlchemy). Imports no torch."""
