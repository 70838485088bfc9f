"""toelab's TCP offload engine: a sans-IO TCP/IP core, offload stages and a fixed resource model."""
