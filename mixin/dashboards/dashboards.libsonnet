// The four Celery dashboards, written in the vocabulary of lib.libsonnet. Rendered into
// grafana/dashboards/*.json by `make mixin` (mixin/render.py).
{
  local g = (import 'lib.libsonnet')($._config),
  local Q = g.Q,
  local W = g.W,
  local T = g.T,
  local TQW = g.TQW,
  local TQ = g.TQ,
  local R = g.R,
  local sel = g.sel,
  local BY_QUEUE = g.BY_QUEUE,
  local BY_WORKER = g.BY_WORKER,
  local BY_TASK = g.BY_TASK,
  local L_QUEUE = g.L_QUEUE,
  local L_WORKER = g.L_WORKER,
  local L_TASK = g.L_TASK,
  local ZERO = g.ZERO,
  local RMAX = g.RMAX,
  local finished = g.finished,
  local target = g.target,
  local targets = g.targets,
  local thresholds = g.thresholds,
  local value_map = g.value_map,
  local override = g.override,
  local fixed = g.fixed,
  local DASHED = g.DASHED,
  local COLOR_CELL = g.COLOR_CELL,
  local COLOR_TEXT = g.COLOR_TEXT,
  local timeseries = g.timeseries,
  local stat = g.stat,
  local table = g.table,
  local bargauge = g.bargauge,
  local dashboard = g.dashboard,
  local quantile = g.quantile,
  local mean = g.mean,
  local failure_ratio = g.failure_ratio,
  local UP_DOWN = g.UP_DOWN,
  local HEARTBEAT_AGE = g.HEARTBEAT_AGE,
  local SATURATION = g.SATURATION,

  // -----------------------------------------------------------------------------------------
  // 1. Overview, 2. Queues, 3. Workers, 4. Tasks

  local overview() =
    local now = [
      stat(
        "Broker",
        "Is the exporter (any of its replicas) connected to the broker (to each one, when it watches several) "
        + "and consuming events? DOWN: the broker is unreachable (incident 01); the "
        + "exporter keeps serving and reconnects by itself. 'No exporter': Prometheus "
        + "scrapes no celery-metrics-exporter (check the target).",
        "max by (broker) (" + (sel("celery_exporter_broker_up")) + ")",
        "none",
        thresholds("red", [[1, "green"]]),
        mappings=UP_DOWN,
        no_value="No exporter",
        legend="{{broker}}",
      ),
      stat(
        "Workers online",
        "Workers heartbeating now (of the selected ones). 0 with a ready backlog means "
        + "tasks pile up and nothing will run them (incident 01).",
        "sum(" + RMAX + " (celery_worker_up{" + W + "})) or " + ZERO,
        "none",
        thresholds("red", [[1, "green"]]),
        decimals=0,
      ),
      stat(
        "Workers down",
        "Workers that stopped heartbeating (killed, OOM, lost network: after 5 missed "
        + "heartbeats) or shut down, in the last hour (--worker-purge-after). See the "
        + "Workers dashboard for which.",
        "count(" + RMAX + " (celery_worker_up{" + W + "}) == 0) or " + ZERO,
        "none",
        thresholds("green", [[1, "red"]]),
        decimals=0,
      ),
      stat(
        "Ready backlog",
        "Messages waiting in the broker for a worker (ready, not prefetched), summed over"
        + " the selected queues. Orange above 100, red above 1000: look at the Queues "
        + "dashboard for which queue grows.",
        "sum(" + RMAX + " (celery_queue_messages{" + Q + "})) or " + ZERO,
        "short",
        thresholds("green", [[100, "orange"], [1000, "red"]]),
        decimals=0,
      ),
      stat(
        "Queues nobody consumes",
        "Queues holding messages that no live worker consumes: they will never drain "
        + "(routing mismatch, incidents 03 and 04). The table further down names them.",
        "count((" + RMAX + " (celery_queue_messages{" + Q + "}) > 0)\nand (" + RMAX + " (celery_queue_worker_consumers{" + Q + "}) == 0)) or " + ZERO,
        "none",
        thresholds("green", [[1, "red"]]),
        decimals=0,
      ),
      stat(
        "Oldest message age",
        "How long the next message of the slowest selected queue has waited (Redis only)."
        + " Growing steadily: consumers are missing or too slow. Empty: no message waiting,"
        + " or a RabbitMQ broker.",
        "max(celery_queue_oldest_message_age_seconds{" + Q + "})",
        "s",
        thresholds("green", [[60, "orange"], [600, "red"]]),
        no_value="None waiting",
      ),
      stat(
        "Succeeded /s (5m)",
        "Tasks finishing successfully per second over the last 5 minutes. 0 while the "
        + "backlog is above 0 means nothing is being processed (incident 04).",
        "sum(" + RMAX + " (rate(celery_task_succeeded_total{" + TQW + "}[5m]))) or " + ZERO,
        "ops",
      ),
      stat(
        "Failed /s (5m)",
        "Tasks raising an exception per second over the last 5 minutes. See the Tasks "
        + "dashboard for which task and which exception.",
        "sum(" + RMAX + " (rate(celery_task_failed_total{" + TQW + "}[5m]))) or " + ZERO,
        "ops",
        thresholds("green", [[0.001, "orange"]]),
      ),
      stat(
        "Failure ratio (5m)",
        "Failed / (succeeded + failed) over the last 5 minutes. Empty when no task "
        + "finished.",
        failure_ratio("", TQW, "5m"),
        "percentunit",
        thresholds("green", [[0.05, "orange"], [0.2, "red"]]),
        no_value="No tasks",
      ),
      stat(
        "Runtime p95 (5m)",
        "95th percentile of task execution time (successes and failures) over the last 5 "
        + "minutes. Compare with your tasks' time limits.",
        std.strReplace(quantile(0.95, "runtime", TQ), R, "5m"),
        "s",
        no_value="No tasks",
      ),
      stat(
        "Worker restarts (1h)",
        "worker-online events in the last hour, beyond each worker's first. A worker in a"
        + " crash or restart loop (exits after its banner, incident 02) makes this climb; a"
        + " broker outage adds one per worker (consumers reconnect).",
        "sum(" + RMAX + " (increase(celery_worker_online_total{" + W + "}[1h]))) or " + ZERO,
        "none",
        thresholds("green", [[1, "orange"], [10, "red"]]),
        decimals=0,
      ),
      stat(
        "Workers without task events",
        "Workers that process tasks but send no task events: started without -E. Task "
        + "metrics miss everything they run. Fix: `celery worker -E`, "
        + "worker_send_task_events = True, or the exporter's --enable-events-interval.",
        "count(" + RMAX + " (celery_worker_task_events_enabled{" + W + "}) == 0) or " + ZERO,
        "none",
        thresholds("green", [[1, "orange"]]),
        decimals=0,
      ),
    ];
    local tasks = [
      timeseries(
        "Task throughput",
        "Tasks per second by outcome. Failed or retried rising while succeeded falls: a "
        + "dependency of your tasks is failing. Received above succeeded + failed for long:"
        + " workers fall behind.",
        targets(
          [
            [
              "sum(" + RMAX + " (rate(celery_task_succeeded_total{" + TQW + "}[" + R + "])))",
              "succeeded",
            ],
            [
              "sum(" + RMAX + " (rate(celery_task_failed_total{" + TQW + "}[" + R + "])))",
              "failed",
            ],
            [
              "sum(" + RMAX + " (rate(celery_task_retried_total{" + TQW + "}[" + R + "])))",
              "retried",
            ],
            [
              "sum(" + RMAX + " (rate(celery_task_received_total{" + TQW + "}[" + R + "])))",
              "received",
            ],
          ],
        ),
        "ops",
        w=8,
        overrides=[
          override("succeeded", { color: fixed("green") }),
          override("failed", { color: fixed("red") }),
          override("retried", { color: fixed("orange") }),
          override("received", { color: fixed("blue"), dash: DASHED }),
        ],
      ),
      timeseries(
        "Failure ratio",
        "Failed / (succeeded + failed). A step up after a deploy points at the deploy; a "
        + "slow climb at a dependency.",
        targets([[failure_ratio("", TQW), "failure ratio"]]),
        "percentunit",
        w=8,
        max_=1,
        threshold_line=[0.2, "red"],
      ),
      timeseries(
        "Task runtime percentiles",
        "Execution time of the selected tasks (succeeded and failed). p99 near a time "
        + "limit: tasks are about to be killed.",
        targets(
          [
            [quantile(0.5, "runtime", TQ), "p50"],
            [quantile(0.95, "runtime", TQ), "p95"],
            [quantile(0.99, "runtime", TQ), "p99"],
          ],
        ),
        "s",
        w=8,
      ),
    ];
    local queues = [
      timeseries(
        "Ready backlog by queue",
        "Ready messages per queue (Redis: priority sub-queues included). A line that only"
        + " goes up: nobody consumes that queue, or consumers are too slow.",
        targets(
          [
            [
              "sum by (" + BY_QUEUE + ") (" + RMAX + " (celery_queue_messages{" + Q + "}))",
              L_QUEUE,
            ],
          ],
        ),
        "short",
        w=8,
        decimals=0,
      ),
      timeseries(
        "Oldest message age by queue",
        "How long the next message of each queue has waited (Redis only). Should stay "
        + "near your acceptable latency; a straight rising line means the queue is stuck.",
        targets(
          [
            [
              "max by (" + BY_QUEUE + ") (celery_queue_oldest_message_age_seconds{" + Q + "})",
              L_QUEUE,
            ],
          ],
        ),
        "s",
        w=8,
      ),
      table(
        "Queues with messages and no live consumer",
        "Each row is a queue nobody will drain: messages wait, yet no live worker "
        + "consumes it. Usual causes: a route to a queue no worker listens to (-Q), or all "
        + "its workers are down. Empty is good.",
        [["queue_name", "Queue"], ["broker", "Broker"]],
        [
          [
            "Ready messages",
            "short",
            "sum by (" + BY_QUEUE + ") ((" + RMAX + " (celery_queue_messages{" + Q + "}) > 0) and (" + RMAX + " (celery_queue_worker_consumers{" + Q + "}) == 0))",
          ],
        ],
        w=8,
        no_value="None",
        sort_by="Ready messages",
      ),
    ];
    local workers = [
      timeseries(
        "Workers up and down",
        "Live workers, and workers known to be down (kept for --worker-purge-after). Dips"
        + " of 'up' with matching bumps of 'down' are restarts or crashes.",
        targets(
          [
            ["sum(" + RMAX + " (celery_worker_up{" + W + "}))", "up"],
            ["count(" + RMAX + " (celery_worker_up{" + W + "}) == 0) or " + ZERO, "down"],
          ],
        ),
        "none",
        w=8,
        decimals=0,
        overrides=[
          override("up", { color: fixed("green") }),
          override("down", { color: fixed("red") }),
        ],
      ),
      timeseries(
        "Worker restarts",
        "worker-online events per worker (only workers that had one). Regular bars for "
        + "the same worker: a restart loop (incident 02); check its exit code and logs.",
        targets(
          [
            [
              "sum by (" + BY_WORKER + ") (" + RMAX + " (increase(celery_worker_online_total{" + W + "}[" + R + "]))) > 0",
              L_WORKER,
            ],
          ],
        ),
        "none",
        w=8,
        bars=true,
        no_value="No restarts",
      ),
      timeseries(
        "Busy vs pool processes",
        "Pool processes running a task versus pool size, over live workers. Busy at the "
        + "pool size for long: all workers are saturated, add capacity.",
        targets(
          [
            ["sum(" + RMAX + " (celery_worker_busy_processes{" + W + "}))", "busy"],
            [
              "sum(" + RMAX + " (celery_worker_pool_processes{" + W + "}) and " + RMAX + " (celery_worker_up{" + W + "}) == 1)",
              "pool size",
            ],
          ],
        ),
        "none",
        w=8,
        overrides=[
          override("pool size", { dash: DASHED, color: fixed("text") }),
        ],
      ),
    ];
    // The exporter's own process series (process_*, scrape_*) carry no label of its own:
    // joined on its build info, per replica.
    local replica = std.join(', ', $._config.clusterLabels + $._config.replicaLabels);
    local exporters = " and on (" + replica + ") celery_exporter_build_info" + $._config.sel;
    local exporter = [
      timeseries(
        "Event lag and silence",
        "Lag: arrival minus sending time of the latest event (worker batching and clock "
        + "skew included); growing means the exporter falls behind. Silence: time since the"
        + " last event; it grows when no worker sends anything.",
        targets(
          [
            [
              "max by (broker) (" + (sel("celery_exporter_event_lag_seconds")) + ")",
              "lag {{broker}}",
            ],
            [
              "time() - max by (broker) (" + (sel("celery_exporter_last_event_timestamp_seconds")) + " > 0)",
              "silence {{broker}}",
            ],
          ],
        ),
        "s",
        w=5,
      ),
      timeseries(
        "Skipped events",
        "Malformed or unusable event messages skipped, by reason. handler_error is a bug "
        + "in the exporter: please report it. Anything else points at a foreign producer on"
        + " the event exchange.",
        targets(
          [
            [
              "sum by (broker, reason) (" + RMAX + " (rate(" + (sel("celery_exporter_events_skipped_total")) + "[" + R + "])))",
              "{{reason}} {{broker}}",
            ],
          ],
        ),
        "ops",
        w=5,
      ),
      timeseries(
        "Broker reconnects",
        "Event connections lost and reopened (error: broker went away; watchdog: a silent"
        + " half-open connection) and failed connection attempts. Events sent while "
        + "disconnected are lost, so counters undercount during these.",
        targets(
          [
            [
              "sum by (broker, reason) (" + RMAX + " (increase(" + (sel("celery_exporter_broker_reconnects_total")) + "[" + R + "])))",
              "reconnect ({{reason}}) {{broker}}",
            ],
            [
              "sum by (broker) (" + RMAX + " (increase(" + (sel("celery_exporter_broker_connect_failures_total")) + "[" + R + "])))",
              "failed connects {{broker}}",
            ],
          ],
        ),
        "none",
        w=5,
        bars=true,
      ),
      stat(
        "Queue sampling",
        "Did the latest sample of the broker's queues succeed (on any replica; per source, redis or "
        + "rabbitmq, and per broker)? DOWN: queue panels show the last good values (see the"
        + " sample age next to this); the exporter logs the error once per outage.",
        "max by (broker, source) (" + (sel("celery_exporter_source_up")) + ")",
        "none",
        thresholds("red", [[1, "green"]]),
        mappings=UP_DOWN,
        no_value="No queue source",
        legend="{{source}} {{broker}}",
        w=4,
        h=8,
      ),
      timeseries(
        "Queue sample age",
        "Age of the queue numbers: time since each source last sampled the broker. It "
        + "should stay below a few sample intervals (5 s); when it grows the queue panels "
        + "show old values.",
        targets(
          [
            [
              "time() - max by (broker, source) (" + (sel("celery_exporter_source_last_success_timestamp_seconds")) + ")",
              "{{source}} {{broker}} sample age",
            ],
          ],
        ),
        "s",
        w=5,
        threshold_line=[60, "red"],
      ),
      // docs/scaling.md, "How much memory to give it": the rule, per replica, from now's
      // series, held and tracked tasks.
      timeseries(
        "Exporter memory",
        "Resident memory of each exporter replica, and the memory limit docs/scaling.md "
        + "suggests for what it holds now (twice 50 MiB + 2 KiB per sample scraped + 4 KiB per"
        + " held task + 0.5 KiB per tracked task). RSS near the container's limit: raise the"
        + " limit to the suggestion's highest over a day.",
        targets(
          [
            [
              "process_resident_memory_bytes" + exporters,
              "RSS {{instance}}",
            ],
            [
              "2 * (50 * 2^20"
              + " + 2048 * max by (" + replica + ") (scrape_samples_scraped" + exporters + ")"
              + " + 4096 * sum by (" + replica + ") (" + sel("celery_exporter_held_tasks") + ")"
              + " + 512 * sum by (" + replica + ") (" + sel("celery_exporter_tracked_tasks") + "))",
              "suggested limit {{instance}}",
            ],
          ],
        ),
        "bytes",
        w=5,
        overrides=[override("/suggested limit.*/", { dash: DASHED })],
      ),
    ];
    dashboard(
      "celery-overview",
      "Celery / Overview",
      "Is Celery healthy right now? Broker, workers, backlog, throughput, failures, and"
      + " the exporter's own health. Drill down with the Queues, Workers and Tasks "
      + "dashboards.",
      [
        ["Right now", now],
        ["Tasks", tasks],
        ["Queues", queues],
        ["Workers", workers],
        ["Exporter", exporter],
      ],
      ["queue", "worker", "task"],
    ),

  local queues() =
    local completed = "sum by (" + BY_QUEUE + ") (" + RMAX + " (rate(" + (finished(Q)) + "[5m])))";
    local now = [
      table(
        "Queues now",
        "One row per queue. Red 'Live worker consumers' with 'Ready' above 0: a queue "
        + "nobody drains (incidents 03, 04). 'Reserved' (Redis) counts messages handed to "
        + "workers but not acknowledged (prefetched, ETA, acks_late); 'Broker consumers' is"
        + " RabbitMQ's own count. Rates and p95 are over 5 minutes.",
        [["queue_name", "Queue"], ["broker", "Broker"]],
        [
          [
            "Ready",
            "short",
            "sum by (" + BY_QUEUE + ") (" + RMAX + " (celery_queue_messages{" + Q + "}))",
          ],
          [
            "Reserved",
            "short",
            "sum by (" + BY_QUEUE + ") (" + RMAX + " (celery_queue_reserved_messages{" + Q + "}))",
          ],
          [
            "Oldest message",
            "s",
            "max by (" + BY_QUEUE + ") (celery_queue_oldest_message_age_seconds{" + Q + "})",
          ],
          [
            "Live worker consumers",
            "short",
            "sum by (" + BY_QUEUE + ") (" + RMAX + " (celery_queue_worker_consumers{" + Q + "}))",
          ],
          [
            "Broker consumers",
            "short",
            "sum by (" + BY_QUEUE + ") (" + RMAX + " (celery_queue_broker_consumers{" + Q + "}))",
          ],
          ["Completed /s", "ops", completed],
          [
            "Queue wait p95",
            "s",
            std.strReplace(quantile(0.95, "queue_wait", Q, BY_QUEUE), R, "5m"),
          ],
        ],
        overrides=[
          override("Live worker consumers", { cell: COLOR_CELL, thresholds: thresholds("red", [[1, "green"]]) }),
          override("Ready", { cell: COLOR_TEXT, thresholds: thresholds("text", [[100, "orange"], [1000, "red"]]) }),
        ],
        h=9,
        sort_by="Ready",
      ),
    ];
    local depth = [
      timeseries(
        "Ready messages",
        "Messages waiting in each queue (Redis: priority sub-queues included; RabbitMQ: "
        + "ready only). Sustained above 100 with no drain is incident 04's 'queue depth > "
        + "100 for 5 min'.",
        targets(
          [
            [
              "sum by (" + BY_QUEUE + ") (" + RMAX + " (celery_queue_messages{" + Q + "}))",
              L_QUEUE,
            ],
          ],
        ),
        "short",
        decimals=0,
        threshold_line=[100, "orange"],
      ),
      timeseries(
        "Ready messages by priority",
        "Redis: messages per priority sub-queue (priority step; 0 is the bare list, "
        + "consumed first). High steps that never drain: low-priority work is starved by a "
        + "steady stream of urgent tasks.",
        targets(
          [
            [
              "sum by (" + BY_QUEUE + ", priority) (" + RMAX + " (celery_queue_messages_by_priority{" + Q + "}))",
              L_QUEUE + " priority {{priority}}",
            ],
          ],
        ),
        "short",
        decimals=0,
      ),
      timeseries(
        "Reserved (unacknowledged) messages",
        "Redis: messages handed to workers and not yet acknowledged: prefetched, ETA or "
        + "countdown tasks held by workers, running acks_late tasks. Large while 'ready' is"
        + " 0: workers hoard tasks (lower the prefetch multiplier). Per queue is absent "
        + "above 10,000 unacked; the total stays.",
        targets(
          [
            [
              "sum by (" + BY_QUEUE + ") (" + RMAX + " (celery_queue_reserved_messages{" + Q + "}))",
              L_QUEUE,
            ],
            [
              "sum(" + RMAX + " (" + (sel("celery_broker_reserved_messages")) + "))",
              "all queues",
            ],
          ],
        ),
        "short",
        decimals=0,
        overrides=[
          override("all queues", { dash: DASHED, color: fixed("text") }),
        ],
      ),
      timeseries(
        "Oldest message age",
        "Redis: how long the next message to be consumed has waited. A line rising one "
        + "second per second: the head of the queue does not move.",
        targets(
          [
            [
              "max by (" + BY_QUEUE + ") (celery_queue_oldest_message_age_seconds{" + Q + "})",
              L_QUEUE,
            ],
          ],
        ),
        "s",
      ),
    ];
    local flow = [
      timeseries(
        "Consumers per queue",
        "Live workers consuming each queue (from their active_queues replies), and on "
        + "RabbitMQ the consumers the broker counts. 0 live workers on a queue with "
        + "messages: nothing will drain it.",
        targets(
          [
            [
              "sum by (" + BY_QUEUE + ") (" + RMAX + " (celery_queue_worker_consumers{" + Q + "}))",
              L_QUEUE + " live workers",
            ],
            [
              "sum by (" + BY_QUEUE + ") (" + RMAX + " (celery_queue_broker_consumers{" + Q + "}))",
              L_QUEUE + " broker consumers",
            ],
          ],
        ),
        "none",
        decimals=0,
        overrides=[override("/broker consumers$/", { dash: DASHED })],
      ),
      timeseries(
        "Completed per queue",
        "Tasks finished (succeeded or failed) per second per queue. 0 for minutes while "
        + "the queue has messages is incident 04's 'processing rate 0'. Queue '(unknown)': "
        + "producers send no task-sent events and the worker consumes several queues.",
        targets(
          [
            [
              "sum by (" + BY_QUEUE + ") (" + RMAX + " (rate(" + (finished(Q)) + "[" + R + "])))",
              L_QUEUE,
            ],
          ],
        ),
        "ops",
      ),
      timeseries(
        "Arrivals per queue",
        "Tasks published (task-sent, needs task_send_sent_event = True in producers) and "
        + "delivered to workers (task-received, retries included) per second. Published "
        + "above completed for long: the backlog grows.",
        targets(
          [
            [
              "sum by (" + BY_QUEUE + ") (" + RMAX + " (rate(celery_task_sent_total{" + Q + "}[" + R + "])))",
              L_QUEUE + " published",
            ],
            [
              "sum by (" + BY_QUEUE + ") (" + RMAX + " (rate(celery_task_received_total{" + Q + "}[" + R + "])))",
              L_QUEUE + " received",
            ],
          ],
        ),
        "ops",
        overrides=[override("/received$/", { dash: DASHED })],
      ),
      timeseries(
        "Time to drain at the current rate",
        "Ready messages divided by the completion rate (5 min): how long the backlog "
        + "would last if nothing new arrived. Empty for a queue where nothing completes "
        + "(see 'Completed per queue').",
        targets(
          [
            [
              "sum by (" + BY_QUEUE + ") (" + RMAX + " (celery_queue_messages{" + Q + "}))\n/ (" + completed + " > 0)",
              L_QUEUE,
            ],
          ],
        ),
        "s",
      ),
    ];
    local wait = [
      timeseries(
        "Queue wait p50",
        "Median time from when a task became due (sent, or its ETA) to when it started. "
        + "Without task-sent events it starts at task-received and misses time in the "
        + "broker.",
        targets([[quantile(0.5, "queue_wait", Q, BY_QUEUE), L_QUEUE]]),
        "s",
      ),
      timeseries(
        "Queue wait p95",
        "95th percentile of the wait before a task starts. High p95 with a low p50: "
        + "bursts that the pool absorbs slowly, or long tasks blocking prefetched ones.",
        targets([[quantile(0.95, "queue_wait", Q, BY_QUEUE), L_QUEUE]]),
        "s",
      ),
    ];
    dashboard(
      "celery-queues",
      "Celery / Queues",
      "Per queue: ready depth (with Redis priorities), reserved messages, oldest "
      + "message, consumers, flow in and out, and how long tasks wait before they start.",
      [
        ["Now", now],
        ["Depth", depth],
        ["Consumers and flow", flow],
        ["Waiting time", wait],
      ],
      ["queue"],
    ),

  local workers() =
    local now = [
      stat(
        "Workers online",
        "Selected workers heartbeating now. 0: no worker runs (incident 01).",
        "sum(" + RMAX + " (celery_worker_up{" + W + "})) or " + ZERO,
        "none",
        thresholds("red", [[1, "green"]]),
        decimals=0,
      ),
      stat(
        "Workers down",
        "Selected workers that stopped heartbeating or shut down in the last hour. The "
        + "table below shows which, and their last heartbeat.",
        "count(" + RMAX + " (celery_worker_up{" + W + "}) == 0) or " + ZERO,
        "none",
        thresholds("green", [[1, "red"]]),
        decimals=0,
      ),
      stat(
        "Pool saturation",
        "Busy pool processes over pool size, across live selected workers. Near 100% for "
        + "long: tasks wait for a free process; add workers or concurrency.",
        "sum(" + RMAX + " (celery_worker_busy_processes{" + W + "}))\n/ (sum(" + RMAX + " (celery_worker_pool_processes{" + W + "}) and " + RMAX + " (celery_worker_up{" + W + "}) == 1) > 0)",
        "percentunit",
        thresholds("green", [[0.8, "orange"], [0.95, "red"]]),
        no_value="No live worker",
      ),
      stat(
        "Restarts (1h)",
        "worker-online events in the last hour beyond each worker's first start: crash or"
        + " restart loops (incident 02), rolling deploys, consumer reconnects after a "
        + "broker outage.",
        "sum(" + RMAX + " (increase(celery_worker_online_total{" + W + "}[1h]))) or " + ZERO,
        "none",
        thresholds("green", [[1, "orange"], [10, "red"]]),
        decimals=0,
      ),
      stat(
        "Without task events",
        "Workers processing tasks without sending task events (no -E): their tasks are "
        + "missing from every task metric.",
        "count(" + RMAX + " (celery_worker_task_events_enabled{" + W + "}) == 0) or " + ZERO,
        "none",
        thresholds("green", [[1, "orange"]]),
        decimals=0,
      ),
      stat(
        "Largest peak memory",
        "The highest peak RSS of a selected worker's main process (prefork children not "
        + "included). Compare with the container's memory limit.",
        "max(celery_worker_max_rss_bytes{" + W + "})",
        "bytes",
        no_value="Unknown",
      ),
    ];
    local table_panel = table(
      "Workers",
      "One row per worker. Up: DOWN means no heartbeat for 5 intervals (killed, OOM, "
      + "network) or a warm shutdown. Heartbeat age should stay near the interval (2 s). "
      + "Task events OFF: started without -E. Empty cells: not known yet (stats are asked"
      + " every 30 s).",
      [["hostname", "Worker"], ["broker", "Broker"]],
      [
        [
          "Up",
          "none",
          "max by (" + BY_WORKER + ") (celery_worker_up{" + W + "})",
        ],
        ["Heartbeat age", "s", HEARTBEAT_AGE],
        [
          "Heartbeat interval",
          "s",
          "max by (" + BY_WORKER + ") (celery_worker_heartbeat_interval_seconds{" + W + "})",
        ],
        [
          "Active tasks",
          "short",
          "max by (" + BY_WORKER + ") (celery_worker_active_tasks{" + W + "})",
        ],
        [
          "Busy",
          "short",
          "max by (" + BY_WORKER + ") (celery_worker_busy_processes{" + W + "})",
        ],
        [
          "Pool",
          "short",
          "max by (" + BY_WORKER + ") (celery_worker_pool_processes{" + W + "})",
        ],
        ["Saturation", "percentunit", SATURATION],
        [
          "Prefetch",
          "short",
          "max by (" + BY_WORKER + ") (celery_worker_prefetch_limit{" + W + "})",
        ],
        [
          "Peak RSS",
          "bytes",
          "max by (" + BY_WORKER + ") (celery_worker_max_rss_bytes{" + W + "})",
        ],
        [
          "Restarts (1h)",
          "short",
          "sum by (" + BY_WORKER + ") (" + RMAX + " (increase(celery_worker_online_total{" + W + "}[1h])))",
        ],
        [
          "Processed /s (5m)",
          "ops",
          "sum by (" + BY_WORKER + ") (" + RMAX + " (rate(celery_worker_processed_tasks_total{" + W + "}[5m])))",
        ],
        [
          "Task events",
          "none",
          "max by (" + BY_WORKER + ") (celery_worker_task_events_enabled{" + W + "})",
        ],
      ],
      overrides=[
        override("Up", { mappings: UP_DOWN, cell: COLOR_CELL, thresholds: thresholds("red", [[1, "green"]]) }),
        override("Task events", { mappings: value_map({ "0": ["OFF (no -E)", "orange"], "1": ["on", "green"] }), cell: COLOR_TEXT }),
        override("Saturation", { cell: {
              "type": "gauge",
              "mode": "basic",
            }, min: 0, max: 1, thresholds: thresholds("green", [[0.8, "orange"], [0.95, "red"]]) }),
        override("Restarts (1h)", { decimals: 0, cell: COLOR_TEXT, thresholds: thresholds("text", [[1, "orange"], [10, "red"]]) }),
      ],
      h=10,
    );
    local capacity_now = [
      bargauge(
        "Saturation now",
        "Busy pool processes over pool size, per worker. A few workers at 100% while "
        + "others idle: uneven routing or prefetching (try -O fair / a lower prefetch).",
        SATURATION,
        L_WORKER,
        "percentunit",
        thresholds("green", [[0.8, "orange"], [0.95, "red"]]),
        max_=1,
        no_value="No pool sizes yet",
      ),
      table(
        "Queues consumed",
        "Which worker consumes which queue (active_queues replies). A queue with messages"
        + " that appears in no row for a live worker is never drained (incident 03).",
        [
          ["hostname", "Worker"],
          ["queue_name", "Queue"],
          ["broker", "Broker"],
        ],
        [
          [
            "Consumes",
            "none",
            "max by (" + BY_WORKER + ", queue_name) (celery_worker_queue_info{" + W + "})",
          ],
        ],
        w=12,
        hide_values=true,
        no_value="No active_queues reply yet",
      ),
    ];
    local liveness = [
      timeseries(
        "Up",
        "1 while the worker heartbeats. Drops to 0 at warm shutdown, or 5 heartbeat "
        + "intervals after the last heartbeat (killed without goodbye). A comb of 0/1: a "
        + "flapping worker.",
        targets(
          [
            [
              "max by (" + BY_WORKER + ") (celery_worker_up{" + W + "})",
              L_WORKER,
            ],
          ],
        ),
        "none",
        max_=1,
        steps=true,
        decimals=0,
      ),
      timeseries(
        "Time since last heartbeat",
        "On the exporter's clock. Normal: below a few heartbeat intervals (2 s by "
        + "default). A worker busy in a solo pool or blocking the event loop pauses its "
        + "heartbeats; past 5 intervals it is declared down.",
        targets([[HEARTBEAT_AGE, L_WORKER]]),
        "s",
      ),
      timeseries(
        "Online events (starts)",
        "worker-online events per worker: each start, and each consumer reconnect after a"
        + " broker outage. Regular bars: a restart loop (incident 02).",
        targets(
          [
            [
              "sum by (" + BY_WORKER + ") (" + RMAX + " (increase(celery_worker_online_total{" + W + "}[" + R + "]))) > 0",
              L_WORKER,
            ],
          ],
        ),
        "none",
        bars=true,
        no_value="No starts",
      ),
      timeseries(
        "Offline events (warm shutdowns)",
        "worker-offline events per worker. A worker that went down with no bar here was "
        + "killed (SIGKILL, OOM) or lost its network.",
        targets(
          [
            [
              "sum by (" + BY_WORKER + ") (" + RMAX + " (increase(celery_worker_offline_total{" + W + "}[" + R + "]))) > 0",
              L_WORKER,
            ],
          ],
        ),
        "none",
        bars=true,
        no_value="No shutdowns",
      ),
    ];
    local capacity = [
      timeseries(
        "Busy vs pool processes",
        "Pool processes running a task (solid) and pool size (dashed) per worker. Busy "
        + "glued to the pool size: the worker is saturated.",
        targets(
          [
            [
              "max by (" + BY_WORKER + ") (celery_worker_busy_processes{" + W + "})",
              L_WORKER + " busy",
            ],
            [
              "max by (" + BY_WORKER + ") (celery_worker_pool_processes{" + W + "})",
              L_WORKER + " pool",
            ],
          ],
        ),
        "none",
        overrides=[override("/ pool$/", { dash: DASHED })],
      ),
      timeseries(
        "Active tasks and prefetch",
        "Tasks running on each worker (heartbeat 'active', not capped at the pool size) "
        + "and how many messages it may hold unacknowledged (prefetch, dashed). Active "
        + "above the pool size: tasks reserved but waiting for a process.",
        targets(
          [
            [
              "max by (" + BY_WORKER + ") (celery_worker_active_tasks{" + W + "})",
              L_WORKER + " active",
            ],
            [
              "max by (" + BY_WORKER + ") (celery_worker_prefetch_limit{" + W + "})",
              L_WORKER + " prefetch",
            ],
          ],
        ),
        "none",
        overrides=[override("/ prefetch$/", { dash: DASHED })],
      ),
      timeseries(
        "Peak memory (max RSS)",
        "Peak resident memory of each worker's main process; it never goes down while the"
        + " process lives, so a sawtooth means restarts. Steady growth: a leak (consider "
        + "--max-tasks-per-child / --max-memory-per-child, incident 05).",
        targets(
          [
            [
              "max by (" + BY_WORKER + ") (celery_worker_max_rss_bytes{" + W + "})",
              L_WORKER,
            ],
          ],
        ),
        "bytes",
      ),
      timeseries(
        "Processed vs task events",
        "Tasks accepted per second from heartbeats (processed, solid) and tasks finished "
        + "per second from task events (dashed). Processed without task events: the worker "
        + "runs without -E.",
        targets(
          [
            [
              "sum by (" + BY_WORKER + ") (" + RMAX + " (rate(celery_worker_processed_tasks_total{" + W + "}[" + R + "])))",
              L_WORKER + " processed",
            ],
            [
              "sum by (" + BY_WORKER + ") (" + RMAX + " (rate(" + (finished(W)) + "[" + R + "])))",
              L_WORKER + " finished (events)",
            ],
          ],
        ),
        "ops",
        overrides=[override("/events\\)$/", { dash: DASHED })],
      ),
    ];
    dashboard(
      "celery-workers",
      "Celery / Workers",
      "Per worker: liveness and heartbeats, restarts, pool saturation, prefetch, "
      + "memory, throughput, and the queues each one consumes.",
      [
        ["Now", now + [table_panel]],
        ["Capacity and queues", capacity_now],
        ["Liveness", liveness],
        ["Capacity over time", capacity],
      ],
      ["worker"],
    ),

  local tasks() =
    local events = [
      [
        "sum(" + RMAX + " (rate(celery_task_sent_total{" + TQ + "}[" + R + "])))",
        "sent",
      ],
      [
        "sum(" + RMAX + " (rate(celery_task_received_total{" + TQW + "}[" + R + "])))",
        "received",
      ],
      [
        "sum(" + RMAX + " (rate(celery_task_started_total{" + TQW + "}[" + R + "])))",
        "started",
      ],
      [
        "sum(" + RMAX + " (rate(celery_task_succeeded_total{" + TQW + "}[" + R + "])))",
        "succeeded",
      ],
      [
        "sum(" + RMAX + " (rate(celery_task_failed_total{" + TQW + "}[" + R + "])))",
        "failed",
      ],
      [
        "sum(" + RMAX + " (rate(celery_task_retried_total{" + TQW + "}[" + R + "])))",
        "retried",
      ],
      [
        "sum(" + RMAX + " (rate(celery_task_rejected_total{" + TQW + "}[" + R + "])))",
        "rejected",
      ],
      [
        "sum(" + RMAX + " (rate(celery_task_revoked_total{" + TQW + "}[" + R + "])))",
        "revoked",
      ],
    ];
    local throughput = [
      timeseries(
        "Task events by type",
        "Every task event per second for the selected tasks. Sent needs "
        + "task_send_sent_event = True in producers and has no worker label (the worker "
        + "filter does not apply to it). Received counts deliveries, retries included.",
        targets(events),
        "ops",
        overrides=[
          override("succeeded", { color: fixed("green") }),
          override("failed", { color: fixed("red") }),
          override("retried", { color: fixed("orange") }),
          override("sent", { dash: DASHED }),
        ],
      ),
      timeseries(
        "Succeeded by task",
        "Successful completions per second per task name.",
        targets(
          [
            [
              "sum by (" + BY_TASK + ") (" + RMAX + " (rate(celery_task_succeeded_total{" + TQW + "}[" + R + "])))",
              L_TASK,
            ],
          ],
        ),
        "ops",
      ),
      timeseries(
        "Failed by task",
        "Failures per second per task name. A task that only fails shows here and not in "
        + "'Succeeded by task'.",
        targets(
          [
            [
              "sum by (" + BY_TASK + ") (" + RMAX + " (rate(celery_task_failed_total{" + TQW + "}[" + R + "])))",
              L_TASK,
            ],
          ],
        ),
        "ops",
      ),
      timeseries(
        "Failure ratio by task",
        "Failed / (succeeded + failed) per task name. 100%: the task always fails, "
        + "whatever the volume.",
        targets([[failure_ratio(BY_TASK, TQW), L_TASK]]),
        "percentunit",
        max_=1,
      ),
      timeseries(
        "Failures by exception",
        "Failures per second by task and exception class. A new exception appearing right"
        + " after a deploy points at the deploy; Reject also counts as rejected.",
        targets(
          [
            [
              "sum by (" + BY_TASK + ", exception) (" + RMAX + " (rate(celery_task_failed_total{" + TQW + "}[" + R + "])))",
              "{{name}}: {{exception}} {{broker}}",
            ],
          ],
        ),
        "ops",
      ),
      table(
        "Failures in the time range",
        "Failures over the whole selected time range, by task and exception, largest "
        + "first.",
        [
          ["name", "Task"],
          ["exception", "Exception"],
          ["broker", "Broker"],
        ],
        [
          [
            "Failures",
            "short",
            "sum by (" + BY_TASK + ", exception) (" + RMAX + " (increase(celery_task_failed_total{" + TQW + "}[$__range]))) > 0",
          ],
        ],
        overrides=[override("Failures", { decimals: 0 })],
        w=12,
        no_value="No failures",
        sort_by="Failures",
      ),
      timeseries(
        "Retried by task",
        "Retries per second per task name. Retries climbing with failures flat: a "
        + "dependency is flaky and retries still absorb it.",
        targets(
          [
            [
              "sum by (" + BY_TASK + ") (" + RMAX + " (rate(celery_task_retried_total{" + TQW + "}[" + R + "])))",
              L_TASK,
            ],
          ],
        ),
        "ops",
      ),
      timeseries(
        "Rejected and revoked by task",
        "Rejected (e.g. Reject raised by the task) and revoked (cancelled, expired) tasks"
        + " per second. Revoked tasks that never reached a worker show name '(unknown)' "
        + "without task-sent events.",
        targets(
          [
            [
              "sum by (" + BY_TASK + ") (" + RMAX + " (rate(celery_task_rejected_total{" + TQW + "}[" + R + "])))",
              L_TASK + " rejected",
            ],
            [
              "sum by (" + BY_TASK + ") (" + RMAX + " (rate(celery_task_revoked_total{" + TQW + "}[" + R + "])))",
              L_TASK + " revoked",
            ],
          ],
        ),
        "ops",
        overrides=[override("/ revoked$/", { dash: DASHED })],
      ),
    ];
    local runtime = [
      timeseries(
        "Runtime percentiles by state",
        "p50 / p95 / p99 execution time of the selected tasks, for successes and "
        + "failures. Failures much faster than successes: tasks fail at once (bad input, "
        + "connection refused); much slower: time limits or timeouts.",
        targets(
          [[
            quantile(q, "runtime", TQ, "state"),
            "p" + (std.round(q * 100)) + " {{state}}",
          ] for q in [0.5, 0.95, 0.99]],
        ),
        "s",
      ),
      timeseries(
        "Runtime p95 by task",
        "95th percentile execution time per task name and state. Compare with each task's"
        + " soft/hard time limit.",
        targets(
          [
            [
              quantile(0.95, "runtime", TQ, BY_TASK + ", state"),
              L_TASK + " ({{state}})",
            ],
          ],
        ),
        "s",
      ),
      timeseries(
        "Average runtime by task",
        "Mean execution time per task name (sum / count of the runtime histogram).",
        targets([[mean("runtime", TQ, BY_TASK), L_TASK]]),
        "s",
      ),
      timeseries(
        "Queue wait p95 by task",
        "95th percentile of how long tasks waited between being due and starting. High "
        + "for one task only: its queue lacks consumers; for all: workers are saturated.",
        targets([[quantile(0.95, "queue_wait", TQ, BY_TASK), L_TASK]]),
        "s",
      ),
    ];
    local running = [
      timeseries(
        "Running tasks",
        "Tasks started and not finished, on live workers, per task name (recounted every "
        + "5 s). A plateau at the pool size with throughput at 0: tasks hang.",
        targets(
          [
            [
              "sum by (" + BY_TASK + ") (" + RMAX + " (celery_task_running{" + T + "}))",
              L_TASK,
            ],
          ],
        ),
        "none",
        decimals=0,
        no_value="None running",
      ),
      timeseries(
        "Longest running task",
        "How long the oldest running task of each name has been running (worker clock). "
        + "Far above the name's p99 runtime: a stuck task (deadlock, a call without "
        + "timeout).",
        targets(
          [
            [
              "time() - min by (" + BY_TASK + ") (celery_task_oldest_running_start_timestamp_seconds{" + T + "})",
              L_TASK,
            ],
          ],
        ),
        "s",
        no_value="None running",
      ),
    ];
    local since_last = "time() - max by (" + BY_TASK + ") (celery_task_last_arrival_timestamp_seconds{" + T + "})";
    local learned = "max by (" + BY_TASK + ") (celery_task_arrival_interval_seconds{" + T + "})";
    local schedule = "min by (" + BY_TASK + ") (celery_beat_schedule_interval_seconds{" + T + "})";
    local periodic = [
      table(
        "Arrivals and periodic tasks",
        "Per task name: time since the last arrival, the learned interval (median gap of "
        + "the last 16 arrivals), their ratio (above 3: a periodic task stopped arriving, "
        + "beat died, incident 02), the beat schedule (with the exporter's --app) and "
        + "learned/schedule (0.5: it runs twice as often, two beats), and distinct senders "
        + "(2 for a periodic task: two beats). Tasks sent on demand are listed too; their "
        + "interval is just their recent rhythm.",
        [["name", "Task"], ["broker", "Broker"]],
        [
          ["Since last arrival", "s", since_last],
          ["Learned interval", "s", learned],
          [
            "Overdue (x interval)",
            "none",
            "(" + since_last + ")\n/ (" + learned + " > 0)",
          ],
          ["Beat schedule", "s", schedule],
          [
            "Learned / schedule",
            "none",
            learned + "\n/ (" + schedule + " > 0)",
          ],
          [
            "Senders",
            "none",
            "max by (" + BY_TASK + ") (celery_task_senders{" + T + "})",
          ],
        ],
        overrides=[
          override("Overdue (x interval)", { decimals: 1, cell: COLOR_CELL, thresholds: thresholds("green", [[2, "orange"], [3, "red"]]) }),
          override("Learned / schedule", { decimals: 2, cell: COLOR_CELL, thresholds: thresholds("red", [[0.75, "green"], [1.5, "orange"]]) }),
          override("Senders", { decimals: 0, cell: COLOR_TEXT, thresholds: thresholds("text", [[2, "orange"]]) }),
        ],
        h=9,
        sort_by="Overdue (x interval)",
      ),
      timeseries(
        "Time since last arrival / learned interval",
        "1 right after an arrival, rising until the next. A periodic task whose line "
        + "crosses 3 has missed its runs: beat stopped (or crashes in a loop, incident 02).",
        targets([["(" + since_last + ")\n/ (" + learned + " > 0)", L_TASK]]),
        "none",
        threshold_line=[3, "red"],
      ),
      timeseries(
        "Learned interval vs beat schedule",
        "The rhythm tasks actually arrive at (solid) and the beat schedule's interval "
        + "(dashed, with the exporter's --app). Learned at half the schedule: two beats "
        + "run; well above it: beat misses runs.",
        targets(
          [
            [learned, L_TASK + " learned"],
            [schedule, L_TASK + " schedule"],
          ],
        ),
        "s",
        overrides=[override("/ schedule$/", { dash: DASHED })],
      ),
      timeseries(
        "Senders",
        "Distinct producer processes among the last 16 arrivals (task-sent only). For a "
        + "periodic task, 2 or more: more than one beat is running, each run happens twice "
        + "(incident 05).",
        targets(
          [
            [
              "max by (" + BY_TASK + ") (celery_task_senders{" + T + "})",
              L_TASK,
            ],
          ],
        ),
        "none",
        decimals=0,
        threshold_line=[2, "orange"],
        w=24,
      ),
    ];
    dashboard(
      "celery-tasks",
      "Celery / Tasks",
      "Per task name: event rates, failures by exception, runtime and queue-wait "
      + "percentiles, running and stuck tasks, and periodic (beat) task rhythm.",
      [
        ["Throughput and failures", throughput],
        ["Runtime and waiting", runtime],
        ["Running now", running],
        ["Periodic tasks", periodic],
      ],
      ["task", "queue", "worker"],
    ),

  grafanaDashboards+:: {
    'celery-overview.json': overview(),
    'celery-queues.json': queues(),
    'celery-workers.json': workers(),
    'celery-tasks.json': tasks(),
  },
}
