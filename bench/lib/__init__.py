"""The benchmarks' shared parts, by concern (bench/README.md lists them).

Imported as ``lib.<module>``: each benchmark runs as ``python bench/<name>.py``, which puts
bench/ first on ``sys.path``.
"""
