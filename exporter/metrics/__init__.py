"""Metric families rendered from the exporter's state at scrape time."""
