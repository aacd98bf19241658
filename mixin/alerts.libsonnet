// Alerts: the exporter's alerts, parametrised by _config (config.libsonnet).
// Rendered into alerts/celery.rules.yml by `make mixin` (mixin/render.py).
{
  local cfg = $._config,

  prometheusAlerts+:: {
    groups+: [
    {
      name: "celery.alerts",
      rules: [
        // --- queues and workers: incidents 01, 03, 04 -------------------------------------
        // Per broker (an exporter may watch several, labelled broker=NAME). Consumers and
        // completions are known only where the exporter sees the workers: the queue has a
        // celery_queue_worker_consumers series (not on SQS: no events, no remote control).
        {
          alert: "CeleryBacklogNoWorkers",
          expr: |||
            sum by (%(cluster)sbroker) (%(replicaMax)s (celery_queue_messages%(sel)s)) > 0
              and on (%(cluster)sbroker) (%(replicaMax)s (celery_workers_online%(sel)s) == 0)
              unless on (%(cluster)sbroker) celery:broker_down:max5m
          ||| % cfg,
          'for': cfg.alertFor.CeleryBacklogNoWorkers,
          labels: {
            severity: "critical",
          },
          annotations: {
            summary: "Tasks are waiting and no Celery worker is alive",
            description: "{{ $value }} messages wait in the queues and no worker has sent a heartbeat in time. Nothing will run them: start the workers, or find out why they exit.",
            runbook_url: cfg.runbookURLBase + '#celerybacklognoworkers',
          },
        },
        {
          alert: "CeleryQueueNoConsumer",
          expr: |||
            %(replicaMax)s (celery_queue_messages%(sel)s) > 0
              and on (%(cluster)sbroker, queue_name) celery_queue_worker_consumers%(sel)s
              unless on (%(cluster)sbroker, queue_name) (
                celery_queue_worker_consumers%(sel)s > 0 or celery_queue_broker_consumers%(sel)s > 0
              )
              unless on (%(cluster)sbroker) celery:broker_down:max5m
          ||| % cfg,
          'for': cfg.alertFor.CeleryQueueNoConsumer,
          labels: {
            severity: "critical",
          },
          annotations: {
            summary: "Queue {{ $labels.queue_name }} has messages and no consumer",
            description: "{{ $value }} messages wait in queue {{ $labels.queue_name }} and no live worker consumes it: check task routes against the workers' -Q.",
            runbook_url: cfg.runbookURLBase + '#celeryqueuenoconsumer',
          },
        },
        {
          alert: "CeleryQueueBacklogHigh",
          expr: |||
            %(replicaMax)s (celery_queue_messages%(sel)s) > %(queueBacklogHighMessages)s
              unless on (%(cluster)sbroker) celery:broker_down:max5m
          ||| % cfg,
          'for': cfg.alertFor.CeleryQueueBacklogHigh,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "Queue {{ $labels.queue_name }} holds {{ $value }} messages",
            description: "Queue {{ $labels.queue_name }} has held more than 100 ready messages for 5 minutes.",
            runbook_url: cfg.runbookURLBase + '#celeryqueuebackloghigh',
          },
        },
        {
          alert: "CeleryQueueNotDraining",
          expr: |||
            (%(replicaMax)s (celery_queue_messages%(sel)s) > 0)
              and on (%(cluster)sbroker, queue_name) (%(replicaMax)s (delta(celery_queue_messages%(sel)s[5m])) >= 0)
              and on (%(cluster)sbroker, queue_name) celery_queue_worker_consumers%(sel)s
              unless on (%(cluster)sbroker, queue_name) (celery:queue_completed:rate5m > 0)
              unless on (%(cluster)sbroker) celery:broker_down:max5m
          ||| % cfg,
          'for': cfg.alertFor.CeleryQueueNotDraining,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "Queue {{ $labels.queue_name }} is not draining",
            description: "Queue {{ $labels.queue_name }} holds {{ $value }} messages, is not shrinking, and no task of it completed in the last 5 minutes.",
            runbook_url: cfg.runbookURLBase + '#celeryqueuenotdraining',
          },
        },
        {
          alert: "CeleryQueueOldestMessageTooOld",
          expr: |||
            %(replicaMax)s (celery_queue_oldest_message_age_seconds%(sel)s) > %(oldestMessageAgeSeconds)s
              unless on (%(cluster)sbroker) celery:broker_down:max5m
          ||| % cfg,
          'for': cfg.alertFor.CeleryQueueOldestMessageTooOld,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "The next message in {{ $labels.queue_name }} has waited {{ $value | humanizeDuration }}",
            description: "The message next in line in queue {{ $labels.queue_name }} has waited more than 10 minutes.",
            runbook_url: cfg.runbookURLBase + '#celeryqueueoldestmessagetooold',
          },
        },
        // --- workers: incidents 02, 05 -----------------------------------------------------
        {
          alert: "CeleryWorkerFlapping",
          expr: |||
            %(replicaMax)s (increase(celery_worker_online_total%(sel)s[%(workerFlappingWindow)s])) >= %(workerFlappingOnlines)s
              unless on (%(cluster)sbroker) celery:broker_down:max5m
          ||| % cfg,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "Worker {{ $labels.hostname }} keeps restarting",
            description: "Worker {{ $labels.hostname }} came online {{ $value | printf \"%.0f\" }} more times in 15 minutes: a crash or restart loop.",
            runbook_url: cfg.runbookURLBase + '#celeryworkerflapping',
          },
        },
        {
          alert: "CeleryWorkerLost",
          expr: |||
            (%(replicaMax)s (celery_worker_up%(sel)s) == 0)
              unless on (%(cluster)sbroker, hostname) (increase(celery_worker_offline_total%(sel)s[1h]) > 0)
              unless on (%(cluster)sbroker) celery:broker_down:max5m
          ||| % cfg,
          'for': cfg.alertFor.CeleryWorkerLost,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "Worker {{ $labels.hostname }} went down without shutting down",
            description: "Worker {{ $labels.hostname }} stopped sending heartbeats and never said goodbye: killed (SIGKILL, OOM) or cut off from the broker.",
            runbook_url: cfg.runbookURLBase + '#celeryworkerlost',
          },
        },
        {
          alert: "CeleryAllWorkersGone",
          expr: |||
            %(replicaMax)s (celery_workers_online%(sel)s) == 0
              and %(replicaMax)s (max_over_time(celery_workers_online%(sel)s[1h])) > 0
              unless on (%(cluster)sbroker) celery:broker_down:max5m
          ||| % cfg,
          'for': cfg.alertFor.CeleryAllWorkersGone,
          labels: {
            severity: "critical",
          },
          annotations: {
            summary: "All Celery workers are gone",
            description: "Workers were online in the last hour and none is now.",
            runbook_url: cfg.runbookURLBase + '#celeryallworkersgone',
          },
        },
        {
          alert: "CeleryWorkerMemoryHigh",
          expr: "%(replicaMax)s (celery_worker_max_rss_bytes%(sel)s) > %(workerMemoryHighBytes)s" % cfg,
          'for': cfg.alertFor.CeleryWorkerMemoryHigh,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "Worker {{ $labels.hostname }} peaked at {{ $value | humanize1024 }}B",
            description: "The main process of worker {{ $labels.hostname }} reached more than 2 GiB of resident memory.",
            runbook_url: cfg.runbookURLBase + '#celeryworkermemoryhigh',
          },
        },
        {
          alert: "CeleryWorkerEventsDisabled",
          expr: |||
            %(replicaMax)s (celery_worker_task_events_enabled%(sel)s) == 0
              unless on (%(cluster)sbroker) celery:broker_down:max5m
          ||| % cfg,
          'for': cfg.alertFor.CeleryWorkerEventsDisabled,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "Worker {{ $labels.hostname }} sends no task events",
            description: "Worker {{ $labels.hostname }} processes tasks but sends no task events: its task metrics are missing. Start it with -E.",
            runbook_url: cfg.runbookURLBase + '#celeryworkereventsdisabled',
          },
        },
        // --- tasks -------------------------------------------------------------------------
        {
          alert: "CeleryTaskFailureRatioHigh",
          expr: |||
            celery:task_failure_ratio:rate5m > %(taskFailureRatio)s
              and on (%(cluster)sbroker, name) celery:task_completed_by_name:rate5m > %(taskFailureMinCompletedPerSecond)s
          ||| % cfg,
          'for': cfg.alertFor.CeleryTaskFailureRatioHigh,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "{{ $value | humanizePercentage }} of {{ $labels.name }} tasks fail",
            description: "More than 10% of {{ $labels.name }} tasks failed over the last 10 minutes.",
            runbook_url: cfg.runbookURLBase + '#celerytaskfailureratiohigh',
          },
        },
        {
          alert: "CeleryTaskRetriesSurging",
          expr: |||
            celery:task_retry_ratio:rate5m > %(taskRetryRatio)s
              and on (%(cluster)sbroker, name) sum by (%(cluster)sbroker, name) (%(replicaMax)s (rate(celery_task_retried_total%(sel)s[5m]))) > %(taskRetryMinPerSecond)s
          ||| % cfg,
          'for': cfg.alertFor.CeleryTaskRetriesSurging,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "{{ $labels.name }} retries surge",
            description: "More than a quarter of {{ $labels.name }} deliveries are retries.",
            runbook_url: cfg.runbookURLBase + '#celerytaskretriessurging',
          },
        },
        {
          alert: "CeleryTaskStuck",
          expr: "time() - min without (%(replicaBy)s) (celery_task_oldest_running_start_timestamp_seconds%(sel)s) > %(taskStuckSeconds)s" % cfg,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "A {{ $labels.name }} task has run for {{ $value | humanizeDuration }}",
            description: "A {{ $labels.name }} task has been running for more than an hour.",
            runbook_url: cfg.runbookURLBase + '#celerytaskstuck',
          },
        },
        // --- periodic tasks (beat): incidents 02, 05 ---------------------------------------
        // Learned rhythm, no configuration: tasks sent by a single producer (beat, a cron
        // job) whose arrivals keep time (celery_task_arrival_regular: beat's do, a web app's
        // do not), every day or more often. Names in the beat schedule (--app) are
        // CeleryScheduledTaskMissed's. The silence is measured at the scrape (timestamp()),
        // not at the evaluation: the value is up to a scrape interval old then, which alone
        // exceeds 3 intervals of a task sent every few seconds.
        {
          alert: "CeleryPeriodicTaskMissed",
          expr: |||
            min without (%(replicaBy)s) (timestamp(celery_task_last_arrival_timestamp_seconds%(sel)s) - celery_task_last_arrival_timestamp_seconds%(sel)s)
              > %(periodicMissedIntervals)s * %(replicaMax)s (celery_task_arrival_interval_seconds%(sel)s)
            and on (%(cluster)sbroker, name) %(replicaMax)s (celery_task_senders%(sel)s) == 1
            and on (%(cluster)sbroker, name) %(replicaMax)s (celery_task_arrival_regular%(sel)s) == 1
            and on (%(cluster)sbroker, name) %(replicaMax)s (celery_task_arrival_interval_seconds%(sel)s) <= %(periodicMaxIntervalSeconds)s
            unless on (%(cluster)sbroker, name) celery_beat_schedule_interval_seconds%(sel)s
            unless on (%(cluster)sbroker) celery:broker_down:max5m
          ||| % cfg,
          'for': cfg.alertFor.CeleryPeriodicTaskMissed,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "Periodic task {{ $labels.name }} stopped arriving",
            description: "{{ $labels.name }} usually arrives every {{ with printf \"celery_task_arrival_interval_seconds{name='%s'}\" $labels.name | query }}{{ . | first | value | humanizeDuration }}{{ end }} and has not for {{ $value | humanizeDuration }}: is beat running?",
            runbook_url: cfg.runbookURLBase + '#celeryperiodictaskmissed',
          },
        },
        // With --app: against the configured schedule. Silence measured at the scrape, as in
        // CeleryPeriodicTaskMissed.
        {
          alert: "CeleryScheduledTaskMissed",
          expr: |||
            min without (%(replicaBy)s) (timestamp(celery_task_last_arrival_timestamp_seconds%(sel)s) - celery_task_last_arrival_timestamp_seconds%(sel)s)
              > on (%(cluster)sbroker, name) group_left %(scheduledMissedIntervals)s * max by (%(cluster)sbroker, name) (celery_beat_schedule_interval_seconds%(sel)s)
              unless on (%(cluster)sbroker) celery:broker_down:max5m
          ||| % cfg,
          'for': cfg.alertFor.CeleryScheduledTaskMissed,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "Scheduled task {{ $labels.name }} missed its runs",
            description: "{{ $labels.name }} is scheduled in beat but has not arrived for two of its intervals: is beat running?",
            runbook_url: cfg.runbookURLBase + '#celeryscheduledtaskmissed',
          },
        },
        {
          alert: "CeleryBeatRunningTwice",
          expr: |||
            max by (%(cluster)sbroker, name) (celery_task_arrival_interval_seconds%(sel)s)
              < on (%(cluster)sbroker, name) %(beatTwiceIntervalRatio)s * max by (%(cluster)sbroker, name) (celery_beat_schedule_interval_seconds%(sel)s)
            or on (%(cluster)sbroker, name) (
              %(replicaMax)s (celery_task_senders%(sel)s) > 1
                and on (%(cluster)sbroker, name) max by (%(cluster)sbroker, name) (celery_beat_schedule_interval_seconds%(sel)s)
            )
          ||| % cfg,
          'for': cfg.alertFor.CeleryBeatRunningTwice,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "Scheduled task {{ $labels.name }} arrives too often",
            description: "{{ $labels.name }} arrives more often than beat's schedule says, or from more than one sender: two beat processes are probably running.",
            runbook_url: cfg.runbookURLBase + '#celerybeatrunningtwice',
          },
        },
        // --- broker and exporter -----------------------------------------------------------
        {
          alert: "CeleryBrokerUnreachable",
          expr: "%(replicaMax)s (celery_exporter_broker_up%(sel)s) == 0" % cfg,
          'for': cfg.alertFor.CeleryBrokerUnreachable,
          labels: {
            severity: "critical",
          },
          annotations: {
            summary: "The exporter cannot reach the Celery broker",
            description: "No replica of celery-metrics-exporter has reached the broker for a minute; workers are probably cut off too.",
            runbook_url: cfg.runbookURLBase + '#celerybrokerunreachable',
          },
        },
        {
          alert: "CeleryQueueSamplingFailing",
          expr: |||
            %(replicaMax)s (celery_exporter_source_up%(sel)s) == 0
              unless on (%(cluster)sbroker) celery:broker_down:max5m
          ||| % cfg,
          'for': cfg.alertFor.CeleryQueueSamplingFailing,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "Sampling {{ $labels.source }} queues fails",
            description: "Queue depth from {{ $labels.source }} is stale.",
            runbook_url: cfg.runbookURLBase + '#celeryqueuesamplingfailing',
          },
        },
        // Sampling works but some queues could not be read (SQS: a queue whose credentials
        // or rights fail): their depth is unknown, and no backlog alert can fire for them.
        {
          alert: "CeleryQueueUnreadable",
          // Only replicas that sample now count: one cut off from the broker keeps the
          // count of its last sample, which a replica reading every queue has replaced.
          expr: |||
            %(replicaMax)s (
              celery_exporter_source_failed_queues%(sel)s > 0 and celery_exporter_source_up%(sel)s == 1
            )
              unless on (%(cluster)sbroker) celery:broker_down:max5m
          ||| % cfg,
          'for': cfg.alertFor.CeleryQueueUnreadable,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "{{ $value }} {{ $labels.source }} queues cannot be read",
            description: "The exporter samples {{ $labels.source }} but could not read {{ $value }} of its queues: their depth is unknown and no backlog alert can fire for them. The exporter's log names them.",
            runbook_url: cfg.runbookURLBase + '#celeryqueueunreadable',
          },
        },
        // Every replica of a cluster's exporter gone: none was ever scraped (absent), or a
        // cluster whose exporter Prometheus had in the last hour has none now (one alert per
        // cluster, however many replicas it ran).
        {
          alert: "CeleryExporterAbsent",
          expr: |||
            (
              group by (%(clusterBy)s) (max_over_time(celery_exporter_build_info%(sel)s[1d]))
                unless on (%(clusterBy)s) celery_exporter_build_info%(sel)s
            )
              or (
                absent(celery_exporter_build_info%(sel)s)
                  unless on () count(max_over_time(celery_exporter_build_info%(sel)s[1d]))
              )
          ||| % cfg,
          'for': cfg.alertFor.CeleryExporterAbsent,
          labels: {
            severity: "critical",
          },
          annotations: {
            summary: "celery-metrics-exporter is down or not scraped",
            description: "No replica of celery-metrics-exporter{{ with $labels.job }} ({{ . }}){{ end }} has been scraped for 5 minutes.",
            runbook_url: cfg.runbookURLBase + '#celeryexporterabsent',
          },
        },
        // One replica down while another of the same cluster serves: nothing is lost yet (the
        // rules take the largest replica), but the next failure loses events. Either its scrape
        // fails, or it is cut off from a broker that another replica reaches. All replicas down
        // is CeleryExporterAbsent (or CeleryBrokerUnreachable), not this.
        {
          alert: "CeleryExporterReplicaDown",
          expr: |||
            (
              up%(upSel)s == 0
                or (
                  celery_exporter_broker_up%(sel)s == 0
                    and on (%(cluster)sbroker) %(replicaMax)s (celery_exporter_broker_up%(sel)s) == 1
                )
            )
              and on (%(clusterBy)s) group by (%(clusterBy)s) (celery_exporter_build_info%(sel)s)
          ||| % cfg,
          'for': cfg.alertFor.CeleryExporterReplicaDown,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "A celery-metrics-exporter replica is down; another serves",
            description: "Replica {{ $labels.instance }} of {{ $labels.job }} is not scraped or not connected to the broker while another replica serves: the figures are whole, but one more failure loses events.",
            runbook_url: cfg.runbookURLBase + '#celeryexporterreplicadown',
          },
        },
        {
          alert: "CeleryEventLagHigh",
          expr: "celery_exporter_event_lag_seconds%(sel)s > %(eventLagSeconds)s" % cfg,
          'for': cfg.alertFor.CeleryEventLagHigh,
          labels: {
            severity: "warning",
          },
          annotations: {
            summary: "Celery events arrive {{ $value | humanizeDuration }} late",
            description: "The exporter is falling behind the event stream (or clocks are skewed).",
            runbook_url: cfg.runbookURLBase + '#celeryeventlaghigh',
          },
        },
        {
          alert: "CeleryEventsSkipped",
          expr: "sum by (%(cluster)sbroker, reason) (%(replicaMax)s (increase(celery_exporter_events_skipped_total%(sel)s[%(eventsSkippedWindow)s]))) > 0" % cfg,
          labels: {
            severity: "info",
          },
          annotations: {
            summary: "The exporter skipped events ({{ $labels.reason }})",
            description: "Unusable messages arrived on the event exchange in the last 10 minutes; the exporter's log names the reason once.",
            runbook_url: cfg.runbookURLBase + '#celeryeventsskipped',
          },
        },
      ],
    },
    ],
  },
}
