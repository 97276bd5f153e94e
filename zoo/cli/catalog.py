"""Commands: placeholder until this module lands."""
from zoo.cli.app import app  # noqa: F401
