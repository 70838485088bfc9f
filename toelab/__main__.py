"""`python -m toelab ...` is the `toelab` command."""
from toelab.cli import entry

entry()
