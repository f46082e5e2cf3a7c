"""The ``oqat`` command-line interface (click)."""
