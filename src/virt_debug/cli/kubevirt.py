"""CLI commands of this concern; filled in by its owner."""

COMMANDS: list = []
