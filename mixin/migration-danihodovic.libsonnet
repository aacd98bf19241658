// Optional rule groups: danihodovic/celery-exporter names re-created from ours (alerts/migration-danihodovic.rules.yml).
// Not part of prometheusRules: load them only while you need them.
// The gauges are re-created once per cluster (each replica's value, then the largest across
// replicas: docs/scaling.md "Two replicas"). The runtime histogram stays per replica: the
// largest of two replicas' cumulative buckets is not a counter (it can step back when the
// fuller replica restarts), so dashboards that sum it count twice with two replicas running.
{
  local cfg = $._config,

  migrationDanihodovicRules+:: {
    groups+: [
    {
      name: "celery.migration.danihodovic",
      rules: [
        {
          record: "celery_worker_tasks_active",
          expr: "%(replicaMax)s (celery_worker_active_tasks%(sel)s)" % cfg,
        },
        {
          record: "celery_queue_length",
          expr: "%(replicaMax)s (celery_queue_messages%(sel)s)" % cfg,
        },
        {
          record: "celery_active_consumer_count",
          expr: "%(replicaMax)s (celery_queue_broker_consumers%(sel)s)" % cfg,
        },
        {
          record: "celery_active_worker_count",
          expr: "%(replicaMax)s (celery_queue_worker_consumers%(sel)s)" % cfg,
        },
        {
          record: "celery_active_process_count",
          expr: |||
            sum by (%(cluster)sbroker, queue_name) (
              %(replicaMax)s (
                celery_worker_queue_info%(sel)s
                  * on (%(sameReplica)s) group_left celery_worker_pool_processes%(sel)s
              )
            )
          ||| % (cfg { sameReplica: std.join(', ', cfg.clusterLabels + cfg.replicaLabels + ['broker', 'hostname']) }),
        },
        // Theirs observes successful runs only, labelled name/hostname/queue_name; ours has no
        // hostname on histograms (series bound) and a state label.
        {
          record: "celery_task_runtime_bucket",
          expr: "sum without (state) (celery_task_runtime_seconds_bucket{state=\"succeeded\"%(matchers)s})" % cfg,
        },
        {
          record: "celery_task_runtime_sum",
          expr: "sum without (state) (celery_task_runtime_seconds_sum{state=\"succeeded\"%(matchers)s})" % cfg,
        },
        {
          record: "celery_task_runtime_count",
          expr: "sum without (state) (celery_task_runtime_seconds_count{state=\"succeeded\"%(matchers)s})" % cfg,
        },
      ],
    },
    ],
  },
}
