"""The terminal of the toelab command: rich tables on stdout, wide enough when piped."""
from __future__ import annotations

import sys

from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 160)
