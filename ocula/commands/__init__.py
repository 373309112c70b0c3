"""Subcommands. Each module defines `register(subparsers, common)`; see ocula.cli."""
