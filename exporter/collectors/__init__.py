"""Collectors, the top layer: one per concern (tasks, workers, queues, the exporter's own
health), each building its metric families from state at scrape time; registered in one
place (``watch.BrokerWatch.sources`` per broker, ``daemon.Exporter`` for the process), each
guarded so it fails alone (guard)."""
