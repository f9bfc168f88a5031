"""CLI commands: trt."""

from dat_deploy.commands._app import app  # noqa: F401
