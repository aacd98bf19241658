"""celery-metrics-exporter: Prometheus metrics for Celery from events and broker sampling."""

__version__ = "0.1.0"
