"""Checks for the exercises on numpy_sae."""

__all__: list[str] = []
