"""Sampled sources: the broker's queues, read on their own clock, never inside /metrics.

Each source is one module with one ``sample()`` method; ``runner.QueueSampler`` runs them
all and gives every source the same health metrics and error handling. Which source a
broker uses is its broker module's answer (``Broker.queue_source``, exporter/brokers/).
"""
