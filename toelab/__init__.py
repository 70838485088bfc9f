"""toelab's top layer: the `toelab` command, the benchmarks and the demo, on top of lab and scenarios."""
