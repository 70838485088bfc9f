"""toelab's TCP offload engine: a sans-IO TCP/IP core, offload stages and a fixed resource model."""
from toe_engine import native

native.activate()  # before any engine module loads: the compiled build of the set, or its source
