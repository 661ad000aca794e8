"""Checks for the exercises on sae."""

__all__: list[str] = []
