"""The benchmarks `toelab bench` runs; see toelab.bench.BENCHES."""
