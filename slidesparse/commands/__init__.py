"""CLI command modules; each exports ``commands``, a list of click commands (see cli.py)."""
