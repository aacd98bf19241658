// Recording rules for autoscaling workers on the exporter's numbers (docs/autoscaling.md):
// per queue, the work there is (ready messages, every Redis priority list included, plus the
// tasks its workers prefetched or run), a worker's capacity (its pool size), and so the
// workers the queue needs. HPA reads celery:queue_desired_workers through prometheus-adapter
// (deploy/examples/keda/); KEDA's Prometheus scaler runs the same load query itself.
{
  local cfg = $._config,

  prometheusRules+:: {
    groups+: [
      {
        name: 'celery.autoscaling',
        rules: [
          // Ready messages (celery_queue_messages sums the priority lists), plus the tasks
          // workers took from the queue and have not started (prefetched: with the default
          // prefetch multiplier a worker holds 4 per process, which would otherwise hide most
          // of a backlog), plus the tasks running on live workers that consume the queue (a
          // worker consuming two queues counts in both). Each the largest across the exporter's
          // replicas (config.libsonnet, replicaMax). label_replace keeps the reserved
          // count apart from the ready one under `or`, which matches on labels.
          {
            record: 'celery:queue_load',
            expr: |||
              sum by (%(cluster)sbroker, queue_name) (
                %(replicaMax)s (celery_queue_messages%(sel)s)
                  or label_replace(%(replicaMax)s (celery_queue_worker_reserved_tasks%(sel)s), "count", "reserved", "", "")
                  or %(replicaMax)s (celery_worker_busy_processes%(sel)s)
                    * on (%(cluster)sbroker, hostname) group_right %(replicaMax)s (celery_worker_queue_info%(sel)s)
              )
            ||| % cfg,
          },
          // Tasks one worker runs at once: the largest pool among the live workers consuming
          // the queue.
          {
            record: 'celery:queue_worker_capacity',
            expr: |||
              max by (%(cluster)sbroker, queue_name) (
                celery_worker_queue_info%(sel)s
                  * on (%(cluster)sbroker, hostname) group_left %(replicaMax)s (celery_worker_pool_processes%(sel)s)
                  and on (%(cluster)sbroker, hostname) celery_worker_up%(sel)s == 1
              ) > 0
            ||| % cfg,
          },
          // Workers the queue needs: load over capacity, rounded up, at least
          // autoscalingMinWorkers; with no live worker to measure, the pool size is
          // autoscalingWorkerConcurrency.
          {
            record: 'celery:queue_desired_workers',
            expr: |||
              clamp_min(
                ceil(
                  celery:queue_load
                    / on (%(cluster)sbroker, queue_name) (
                      celery:queue_worker_capacity
                        or on (%(cluster)sbroker, queue_name) (0 * celery:queue_load + %(autoscalingWorkerConcurrency)s)
                    )
                ),
                %(autoscalingMinWorkers)s
              )
            ||| % cfg,
          },
        ],
      },
    ],
  },
}
