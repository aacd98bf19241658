"""Prometheus primitives, the bottom layer: lean counters and histograms (counting), native
histogram buckets (native) and the exposition writers (exposition, protobuf). Nothing here
imports from the rest of the exporter but ``exporter.logs`` (tests/repo/test_layers.py)."""
