"""toelab's lab: topology templates rendered, validated and built as namespace networks."""
from . import engine_nodes  # noqa: F401  (engine node kinds: spec validation, after-build hooks, lab.engine)
from . import endpoint_nodes  # noqa: F401,E402  (the toe kind: engine endpoint in front of the node's kernel)
