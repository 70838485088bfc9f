"""toelab's lab: topology templates rendered, validated and built as namespace networks."""
