"""Errors shared by the command-line modules (a leaf: ``diffbench.cli`` and ``diffbench.fid_cli`` both raise it)."""

from __future__ import annotations


class UsageError(Exception):
    """Bad input from the command line; reported as ``diffbench <command>: error: <message>``, exit code 2."""
