// The knobs of the mixin. Override any of them without forking:
//   (import 'celery-metrics-exporter-mixin/mixin.libsonnet') + { _config+:: { jobSelector: 'job="celery-prod"' } }
{
  _config+:: {
    // Label matchers added to every selector of the exporter's metrics (alerts, recording
    // rules, dashboards), e.g. 'job="celery-prod"', 'instance=~"celery-exporter-.*"' or
    // 'broker="orders"'. Empty: every celery_* series Prometheus has.
    jobSelector: '',
    instanceSelector: '',
    brokerSelector: '',
    celerySelector: std.join(', ', std.filter(function(s) s != '', [self.jobSelector, self.instanceSelector, self.brokerSelector])),
    // What the expressions append: `metric%(sel)s` and `{matchers...%(matchers)s}`.
    sel: if self.celerySelector == '' then '' else '{%s}' % self.celerySelector,
    matchers: if self.celerySelector == '' then '' else ', ' + self.celerySelector,

    // The labels that tell one Celery cluster from another when one Prometheus scrapes several
    // (one exporter per broker or cluster, docs/scaling.md). Every aggregation and join of the
    // rules keeps them beside `broker`, so that two clusters' queues, workers and outages are
    // never mixed: a broker outage seen by one cluster's exporters never holds back the alerts
    // of another. Give each cluster its own scrape job (or a label of its own, added here);
    // `namespace` keeps apart two Kubernetes namespaces whose ServiceMonitors name the same job.
    clusterLabels: ['namespace', 'job'],
    cluster: std.join('', [l + ', ' for l in self.clusterLabels]),
    clusterBy: std.join(', ', self.clusterLabels),

    // The labels that tell the replicas of one cluster's exporter apart (two exporters on one
    // broker, docs/scaling.md "Two replicas"). Each replica counts every event, so the rules
    // and dashboards take each replica's rate() or value first, then the largest across
    // replicas (replicaMax), then sum: right with one replica running or two.
    replicaLabels: ['instance', 'pod'],
    replicaBy: std.join(', ', self.replicaLabels),
    replicaMax: 'max without (%s)' % self.replicaBy,
    // Matchers of the scrape job alone (for `up`, which carries no broker label).
    upSel: local s = std.join(', ', std.filter(function(s) s != '', [self.jobSelector, self.instanceSelector])); if s == '' then '' else '{%s}' % s,

    // Where docs/runbook.md is published: each alert's runbook_url is this + '#alertname' (an
    // absolute URL, so that Alertmanager's and Grafana's links open). Point it at your copy
    // if you keep your own runbook.
    runbookURLBase: 'https://github.com/celery-metrics-exporter/celery-metrics-exporter/blob/main/docs/runbook.md',

    // Thresholds (docs/runbook.md says how to tune each one). Fractions are strings so that
    // they render as written (jsonnet prints 0.05 as 0.050000000000000003); numbers work too.
    queueBacklogHighMessages: 100,  // CeleryQueueBacklogHigh: ready messages in one queue
    oldestMessageAgeSeconds: 600,  // CeleryQueueOldestMessageTooOld
    workerFlappingOnlines: 3,  // CeleryWorkerFlapping: worker-online events ...
    workerFlappingWindow: '15m',  // ... within this window
    workerMemoryHighBytes: '2 * 1024 * 1024 * 1024',  // CeleryWorkerMemoryHigh (a number or a PromQL product)
    taskFailureRatio: '0.10',  // CeleryTaskFailureRatioHigh: failed / finished over 5m ...
    taskFailureMinCompletedPerSecond: '0.01',  // ... for a task finishing at least this often
    taskRetryRatio: '0.25',  // CeleryTaskRetriesSurging: retries / received over 5m ...
    taskRetryMinPerSecond: '0.05',  // ... with at least this many retries per second
    taskStuckSeconds: 3600,  // CeleryTaskStuck: a task running longer than this
    periodicMissedIntervals: 3,  // CeleryPeriodicTaskMissed: silent for this many learned intervals ...
    periodicMaxIntervalSeconds: 86400,  // ... for tasks arriving at least this often
    scheduledMissedIntervals: 2,  // CeleryScheduledTaskMissed: silent for this many beat intervals
    beatTwiceIntervalRatio: '0.75',  // CeleryBeatRunningTwice: arrivals this much faster than scheduled
    eventLagSeconds: 30,  // CeleryEventLagHigh
    eventsSkippedWindow: '10m',  // CeleryEventsSkipped

    // How long each condition must hold before the alert fires (`for:`); alerts not listed
    // fire at once.
    alertFor: {
      CeleryBacklogNoWorkers: '1m',
      CeleryQueueNoConsumer: '1m',
      CeleryQueueBacklogHigh: '5m',
      CeleryQueueNotDraining: '5m',
      CeleryQueueOldestMessageTooOld: '2m',
      CeleryWorkerLost: '2m',
      CeleryAllWorkersGone: '1m',
      CeleryWorkerMemoryHigh: '5m',
      CeleryWorkerEventsDisabled: '5m',
      CeleryTaskFailureRatioHigh: '10m',
      CeleryTaskRetriesSurging: '10m',
      CeleryPeriodicTaskMissed: '2m',
      CeleryScheduledTaskMissed: '2m',
      CeleryBeatRunningTwice: '5m',
      CeleryBrokerUnreachable: '1m',
      CeleryQueueSamplingFailing: '2m',
      CeleryQueueUnreadable: '5m',
      CeleryExporterAbsent: '5m',
      CeleryExporterReplicaDown: '5m',
      CeleryEventLagHigh: '5m',
    },

    // Autoscaling (celery.autoscaling recording rules, docs/autoscaling.md): the pool size
    // assumed for a queue no live worker consumes (your workers' --concurrency), and the
    // fewest workers celery:queue_desired_workers asks for.
    autoscalingWorkerConcurrency: 4,
    autoscalingMinWorkers: 1,

    // Dashboards.
    dashboardTags: ['celery'],
    dashboardRefresh: '30s',
  },
}
