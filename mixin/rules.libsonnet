// Recording rules: the exporter's recording rules, parametrised by _config (config.libsonnet).
// Rendered into alerts/celery.rules.yml by `make mixin` (mixin/render.py).
{
  local cfg = $._config,

  prometheusRules+:: {
    groups+: [
    {
      name: "celery.recording",
      // Each replica of an exporter counts every event: each replica's rate first, then the
      // largest across replicas (replicaMax; a replica that was down or restarted saw fewer
      // events, never more), then the sum. Quantiles sum the replicas' buckets: two copies of
      // one distribution have its quantiles.
      rules: [
        {
          record: "celery:task_succeeded:rate5m",
          expr: "sum by (%(cluster)sbroker, name, queue_name) (%(replicaMax)s (rate(celery_task_succeeded_total%(sel)s[5m])))" % cfg,
        },
        {
          record: "celery:task_failed:rate5m",
          expr: "sum by (%(cluster)sbroker, name, queue_name) (%(replicaMax)s (rate(celery_task_failed_total%(sel)s[5m])))" % cfg,
        },
        {
          record: "celery:task_completed_by_name:rate5m",
          expr: "sum by (%(cluster)sbroker, name) (%(replicaMax)s (rate({__name__=~\"celery_task_(succeeded|failed)_total\"%(matchers)s}[5m])))" % cfg,
        },
        {
          record: "celery:task_failure_ratio:rate5m",
          expr: |||
            sum by (%(cluster)sbroker, name) (%(replicaMax)s (rate(celery_task_failed_total%(sel)s[5m])))
              / sum by (%(cluster)sbroker, name) (%(replicaMax)s (rate({__name__=~"celery_task_(succeeded|failed)_total"%(matchers)s}[5m])))
          ||| % cfg,
        },
        {
          record: "celery:task_retry_ratio:rate5m",
          expr: |||
            sum by (%(cluster)sbroker, name) (%(replicaMax)s (rate(celery_task_retried_total%(sel)s[5m])))
              / sum by (%(cluster)sbroker, name) (%(replicaMax)s (rate(celery_task_received_total%(sel)s[5m])))
          ||| % cfg,
        },
        {
          record: "celery:queue_completed:rate5m",
          expr: "sum by (%(cluster)sbroker, queue_name) (%(replicaMax)s (rate({__name__=~\"celery_task_(succeeded|failed)_total\"%(matchers)s}[5m])))" % cfg,
        },
        // The native histogram where Prometheus stores one (docs/metrics.md, Native
        // histograms), else the classic buckets.
        {
          record: "celery:task_runtime_seconds:p95_5m",
          expr: |||
            histogram_quantile(0.95, sum by (%(cluster)sbroker, name) (rate(celery_task_runtime_seconds%(sel)s[5m])))
              or histogram_quantile(0.95, sum by (%(cluster)sbroker, name, le) (rate(celery_task_runtime_seconds_bucket%(sel)s[5m])))
          ||| % cfg,
        },
        {
          record: "celery:task_queue_wait_seconds:p95_5m",
          expr: |||
            histogram_quantile(0.95, sum by (%(cluster)sbroker, queue_name) (rate(celery_task_queue_wait_seconds%(sel)s[5m])))
              or histogram_quantile(0.95, sum by (%(cluster)sbroker, queue_name, le) (rate(celery_task_queue_wait_seconds_bucket%(sel)s[5m])))
          ||| % cfg,
        },
        // 1 per broker while every replica of the exporter is cut off from it (not connected or not consuming
        // events) or was in the last 5 minutes: what it then says about workers, queues and
        // arrivals is a consequence of that one cause, and workers need a while to reconnect
        // (kombu retries every 2..30 s) and to be inspected again after it returns. Alerts on
        // such consequences end with `unless on (namespace, job, broker) celery:broker_down:max5m`
        // (the labels of _config.clusterLabels, then broker).
        {
          record: "celery:broker_down:max5m",
          // Only replicas scraped now count: one that vanished (its node died with the broker)
          // still has samples of 1 in the window and would hold the minimum at 0.
          expr: |||
            min by (%(cluster)sbroker) (
              (min_over_time(celery_exporter_broker_up%(sel)s[5m]) == bool 0) and celery_exporter_broker_up%(sel)s
            ) == 1
          ||| % cfg,
        },
        // A queue counts as consumed when a live worker says it consumes it, or (RabbitMQ)
        // the broker counts a consumer on it.
        {
          record: "celery:queue_consumers",
          expr: |||
            max by (%(cluster)sbroker, queue_name) (
              celery_queue_worker_consumers%(sel)s
                or on (%(cluster)sbroker, queue_name) celery_queue_broker_consumers%(sel)s
            )
          ||| % cfg,
        },
      ],
    },
    ],
  },
}
