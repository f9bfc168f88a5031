"""Thin Typer wrappers over library functions, one module per area."""
