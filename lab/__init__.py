"""toelab's lab: topology templates rendered, validated and built as namespace networks."""
from . import engine_nodes  # noqa: F401  (engine node kinds: spec validation, after-build hooks, lab.engine)
