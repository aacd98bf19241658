"""The event stream: consume (consumer), decode (decode), route (dispatch), apply (tasks,
workers)."""
