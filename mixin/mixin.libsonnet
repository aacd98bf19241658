// celery-metrics-exporter monitoring mixin: prometheusAlerts, prometheusRules and
// grafanaDashboards, bent to your labels and thresholds through _config (config.libsonnet).
(import 'config.libsonnet')
+ (import 'rules.libsonnet')
+ (import 'autoscaling.libsonnet')
+ (import 'alerts.libsonnet')
+ (import 'deprecated-names.libsonnet')
+ (import 'migration-danihodovic.libsonnet')
+ (import 'dashboards/dashboards.libsonnet')
