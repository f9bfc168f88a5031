"""CLI commands: profile."""

from dat_deploy.commands._app import app  # noqa: F401
