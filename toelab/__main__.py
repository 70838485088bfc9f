"""`python -m toelab ...` is the `toelab` command."""
import sys

from toelab.cli import main

sys.exit(main())
