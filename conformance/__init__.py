"""focalx conformance: golden cases from an independent oracle, and the runner."""
