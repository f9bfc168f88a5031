"""CLI commands: model."""

from dat_deploy.commands._app import app  # noqa: F401
