// Optional rule groups: old metric names kept alive as recording rules (alerts/deprecated-names.rules.yml).
// Not part of prometheusRules: load them only while you need them.
{
  local cfg = $._config,

  deprecatedNameRules+:: {
    groups+: [
    {
      name: "celery-deprecated-names",
      rules: [
        // Renamed after 0.1.0: a gauge must not end in _count (that suffix belongs to histograms
        // and summaries). Same value, same labels.
        {
          record: "celery_worker_prefetch_count",
          expr: "celery_worker_prefetch_limit%(sel)s" % cfg,
        },
      ],
    },
    ],
  },
}
