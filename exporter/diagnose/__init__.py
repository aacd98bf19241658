"""`celery-metrics-exporter diagnose`: one look at broker, workers and queues, with findings."""
