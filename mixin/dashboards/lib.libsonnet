// The vocabulary the dashboards are written in: label filters, shared expressions, and one
// function per panel kind (timeseries, stat, table, bargauge), rows laid out by layout().
//
// Conventions every panel follows: the ${datasource} variable as data source; label filters
// as regex matchers on the $broker/$queue/$worker/$task variables (multi-value, "All" is
// .*), $broker on every celery_* selector (B, sel(), and the Q/W/T filter sets) plus the
// mixin's _config selector; per-queue, per-worker and per-task series grouped by broker too
// (BY_QUEUE...) with the broker in their legends (L_QUEUE...); a description saying what to
// look for; a unit.
function(cfg) {
  local g = self,

  DS: { type: 'prometheus', uid: '${datasource}' },
  SCHEMA_VERSION: 39,

  // Label filters. Every celery_* selector carries B (alone, through sel(), where no other
  // variable applies): with several brokers every series carries broker="NAME", with a single
  // unnamed one none does, and broker=~".*" ("All") matches series without the label too.
  // Task counters carry name, hostname and queue_name; histograms and celery_task_sent_total
  // have no hostname; running and periodic metrics only a name.
  B: 'broker=~"$broker"' + cfg.matchers,
  local _Q = 'queue_name=~"$queue"',
  local _W = 'hostname=~"$worker"',
  local _T = 'name=~"$task"',
  Q: g.B + ', ' + _Q,
  W: g.B + ', ' + _W,
  T: g.B + ', ' + _T,
  TQW: std.join(', ', [g.B, _T, _Q, _W]),
  TQ: std.join(', ', [g.B, _T, _Q]),
  R: '$__rate_interval',
  // Each replica of an exporter counts every event and sees every queue: a panel takes each
  // replica's rate() or value, then the largest across replicas (RMAX: the mixin's
  // replicaLabels), then sums. Quantiles and ratios need not: two copies of one distribution
  // have its quantiles.
  RMAX: cfg.replicaMax,

  // metric{filters}: a selector, by default filtered on the broker only.
  sel(metric, filters=g.B): metric + '{' + filters + '}',

  // Groupings of per-queue, per-worker and per-task series: the broker comes first, so that
  // two brokers' queues, workers or tasks of the same name stay apart when "All" brokers are
  // shown (without a broker label it changes nothing). Cluster-wide totals do not group.
  BY_QUEUE: 'broker, queue_name',
  BY_WORKER: 'broker, hostname',
  BY_TASK: 'broker, name',
  // Legends name the broker after what it qualifies; it renders empty (no label) with a
  // single unnamed broker.
  L_QUEUE: '{{queue_name}} {{broker}}',
  L_WORKER: '{{hostname}} {{broker}}',
  L_TASK: '{{name}} {{broker}}',
  // "0 when an exporter is scraped, nothing when none is": appended with `or` to counts that
  // are empty when nothing is wrong, so they read 0 rather than "No data", while a dashboard
  // with no exporter behind it still says "No data".
  ZERO: 'sum(0 * ' + g.sel('celery_exporter_broker_up') + ')',
  // Tasks that finished, either way (celery_task_failed_total has an extra `exception` label,
  // so the two never share a label set once rate() drops the name).
  FINISHED: 'celery_task_(succeeded|failed)_total',
  finished(filters): '{__name__=~"%s", %s}' % [g.FINISHED, filters],

  // ---------------------------------------------------------------------------------------
  // Panel builders

  target(expr, legend='', ref='A', instant=false): {
    datasource: g.DS,
    editorMode: 'code',
    expr: expr,
    legendFormat: if legend == '' then '__auto' else legend,
    range: !instant,
    instant: instant,
    refId: ref,
  } + (if instant then { format: 'table' } else {}),

  // Targets A, B, C... from [expr, legend] pairs.
  targets(pairs, instant=false): [
    g.target(pairs[i][0], pairs[i][1], std.char(std.codepoint('A') + i), instant)
    for i in std.range(0, std.length(pairs) - 1)
  ],

  thresholds(base, steps=[]): {
    mode: 'absolute',
    steps: [{ color: base, value: null }] + [{ color: s[1], value: s[0] } for s in steps],
  },
  NEUTRAL: g.thresholds('blue'),

  // value_map({ '0': ['DOWN', 'red'] }): value 0 shown as DOWN in red.
  value_map(texts): [{
    type: 'value',
    options: {
      [std.objectFields(texts)[i]]: {
        text: texts[std.objectFields(texts)[i]][0],
        color: texts[std.objectFields(texts)[i]][1],
        index: i,
      }
      for i in std.range(0, std.length(texts) - 1)
    },
  }],

  // Field override by display name (name) or by regex (name as /regex/).
  local overrideIds = {
    unit: 'unit',
    color: 'color',
    thresholds: 'thresholds',
    mappings: 'mappings',
    decimals: 'decimals',
    min: 'min',
    max: 'max',
    cell: 'custom.cellOptions',
    dash: 'custom.lineStyle',
    width: 'custom.width',
    display: 'displayName',
  },
  override(name, props): {
    matcher: { id: if std.startsWith(name, '/') then 'byRegexp' else 'byName', options: name },
    properties: [{ id: overrideIds[k], value: props[k] } for k in std.objectFields(props)],
  },

  fixed(color): { mode: 'fixed', fixedColor: color },
  DASHED: { fill: 'dash', dash: [10, 10] },
  COLOR_CELL: { type: 'color-background', mode: 'basic' },
  COLOR_TEXT: { type: 'color-text' },

  local optional(key, value) = if value == null then {} else { [key]: value },

  local panel(kind, title, description, w, h) = {
    type: kind,
    title: title,
    description: description,
    datasource: g.DS,
    gridPos: { h: h, w: w, x: 0, y: 0 },
  },

  timeseries(title, description, tgts, unit, w=12, h=8, min_=0, max_=null, bars=false,
             steps=false, stack=false, threshold_line=null, overrides=[], no_value=null,
             decimals=null):
    panel('timeseries', title, description, w, h) {
      fieldConfig: {
        defaults: {
          unit: unit,
          color: { mode: 'palette-classic' },
          custom: {
            drawStyle: if bars then 'bars' else 'line',
            lineInterpolation: if steps then 'stepAfter' else 'linear',
            lineWidth: 1,
            fillOpacity: if bars then 60 else 10,
            gradientMode: 'none',
            showPoints: 'never',
            pointSize: 4,
            spanNulls: false,
            axisPlacement: 'auto',
            axisLabel: '',
            axisCenteredZero: false,
            axisColorMode: 'text',
            scaleDistribution: { type: 'linear' },
            barAlignment: 0,
            stacking: { mode: if stack then 'normal' else 'none', group: 'A' },
            hideFrom: { legend: false, tooltip: false, viz: false },
            thresholdsStyle: { mode: if threshold_line != null then 'line+area' else 'off' },
          },
          mappings: [],
          thresholds:
            if threshold_line != null
            then g.thresholds('transparent', [threshold_line])
            else g.thresholds('green'),
        } + optional('min', min_) + optional('max', max_) + optional('noValue', no_value)
        + optional('decimals', decimals),
        overrides: overrides,
      },
      options: {
        legend: {
          showLegend: true,
          displayMode: 'table',
          placement: 'bottom',
          calcs: ['lastNotNull', 'max'],
        },
        tooltip: { mode: 'multi', sort: 'desc' },
      },
      targets: tgts,
    },

  stat(title, description, expr, unit, steps=g.NEUTRAL, mappings=[], no_value=null,
       decimals=null, w=4, h=4, legend=''):
    panel('stat', title, description, w, h) {
      fieldConfig: {
        defaults: {
          unit: unit,
          color: { mode: 'thresholds' },
          thresholds: steps,
          mappings: mappings,
        } + optional('noValue', no_value) + optional('decimals', decimals),
        overrides: [],
      },
      options: {
        // "last", not "lastNotNull": a series gone now (an emptied queue) must not show the
        // value it had an hour ago.
        reduceOptions: { calcs: ['last'], fields: '', values: false },
        colorMode: 'background',
        graphMode: 'area',
        justifyMode: 'auto',
        orientation: 'auto',
        textMode: 'auto',
        wideLayout: true,
        showPercentChange: false,
      },
      targets: [g.target(expr, legend)],
    },

  // A table of instant queries merged on their labels.
  // key_labels: [[label, column title]...] in order (other labels are hidden). columns:
  // [title, unit, expr] per value column. Each query must keep only the key labels.
  // hide_values: show the key labels only (a list of label combinations). A label the
  // results lack (broker with a single unnamed broker) gets no column.
  table(title, description, key_labels, columns, overrides=[], w=24, h=8, no_value=null,
        unit='short', sort_by=null, hide_values=false):
    local tgts = g.targets([['' + c[2], ''] for c in columns], instant=true);
    local n = std.length(columns);
    local valueNames = [if n > 1 then 'Value #' + t.refId else 'Value' for t in tgts];
    local keys = [k[0] for k in key_labels];
    panel('table', title, description, w, h) {
      fieldConfig: {
        defaults: {
          unit: unit,
          color: { mode: 'thresholds' },
          thresholds: g.thresholds('transparent'),
          mappings: [],
          custom: { align: 'auto', cellOptions: { type: 'auto' }, filterable: true },
        } + optional('noValue', no_value),
        overrides: [g.override(c[0], { unit: c[1] }) for c in columns if c[1] != unit]
                   + overrides,
      },
      options: {
        showHeader: true,
        cellHeight: 'sm',
        footer: { show: false, reducer: ['sum'], fields: '' },
        sortBy: if sort_by != null then [{ displayName: sort_by, desc: true }] else [],
      },
      targets: tgts,
      transformations: (if n > 1 then [{ id: 'merge', options: {} }] else []) + [{
        id: 'organize',
        options: {
          excludeByName: { Time: true, __name__: true, instance: true, job: true }
                         + (if hide_values then { [v]: true for v in valueNames } else {}),
          indexByName: { [keys[i]]: i for i in std.range(0, std.length(keys) - 1) }
                       + { [valueNames[i]]: std.length(keys) + i for i in std.range(0, n - 1) },
          renameByName: { [k[0]]: k[1] for k in key_labels }
                        + { [valueNames[i]]: columns[i][0] for i in std.range(0, n - 1) },
        },
      }],
    },

  bargauge(title, description, expr, legend, unit, steps, min_=0, max_=null, w=12, h=8,
           no_value=null):
    panel('bargauge', title, description, w, h) {
      fieldConfig: {
        defaults: {
          unit: unit,
          min: min_,
          color: { mode: 'thresholds' },
          thresholds: steps,
          mappings: [],
        } + optional('max', max_) + optional('noValue', no_value),
        overrides: [],
      },
      options: {
        displayMode: 'gradient',
        orientation: 'horizontal',
        reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
        showUnfilled: true,
        valueMode: 'color',
        namePlacement: 'auto',
        sizing: 'auto',
        minVizHeight: 16,
        minVizWidth: 8,
        maxVizHeight: 300,
      },
      targets: [g.target(expr, legend, instant=true) { format: 'time_series' }],
    },

  // ---------------------------------------------------------------------------------------
  // Dashboard assembly

  // Rows of panels, placed left to right and wrapped at 24 columns; ids in order.
  layout(sections):
    local place(state, p) =
      local wrap = state.x + p.gridPos.w > 24;
      local x = if wrap then 0 else state.x;
      local y = if wrap then state.y + state.line else state.y;
      local line = if wrap then 0 else state.line;
      state {
        panels+: [p { id: state.id, gridPos+: { x: x, y: y } }],
        id: state.id + 1,
        x: x + p.gridPos.w,
        y: y,
        line: std.max(line, p.gridPos.h),
      };
    local section(state, s) =
      local row = {
        type: 'row',
        title: s[0],
        id: state.id,
        collapsed: false,
        gridPos: { h: 1, w: 24, x: 0, y: state.y },
        panels: [],
      };
      local placed = std.foldl(place, s[1], state {
        panels+: [row], id: state.id + 1, y: state.y + 1, x: 0, line: 0,
      });
      placed { y: placed.y + placed.line };
    std.foldl(section, sections, { panels: [], id: 1, y: 0, x: 0, line: 0 }).panels,

  // name -> [label, selector, label listed, description]. Every dashboard has the broker
  // variable (every panel filters on it) and the others chained to it: their values are
  // those of the chosen brokers.
  local VARIABLE_QUERIES = {
    broker: [
      'Broker',
      'celery_exporter_broker_up' + cfg.sel,
      'broker',
      'Brokers the exporter watches (--broker-url NAME=URL). With a single unnamed broker '
      + 'there is no broker label and only All is offered; it matches every series.',
    ],
    queue: ['Queue', g.sel('celery_queue_messages'), 'queue_name', 'Queues the exporter samples.'],
    worker: ['Worker', g.sel('celery_worker_up'), 'hostname', 'Worker node names (celery@host).'],
    task: ['Task', g.sel('celery_task_received_total'), 'name', 'Task names workers received.'],
  },

  // Only fields of Grafana's dashboard schema (tests/integration/dashboards/test_grafana_schema.py): no `definition`
  // (the editor's display copy of the query) and no empty `current` on the data source.
  variables(names): [{
    name: 'datasource',
    label: 'Data source',
    description: 'The Prometheus that scrapes celery-metrics-exporter.',
    type: 'datasource',
    query: 'prometheus',
    hide: 0,
    includeAll: false,
    multi: false,
    options: [],
    refresh: 1,
    regex: '',
    skipUrlSync: false,
  }] + [
    local v = VARIABLE_QUERIES[name];
    local query = 'label_values(%s, %s)' % [v[1], v[2]];
    {
      name: name,
      label: v[0],
      description: v[3],
      type: 'query',
      datasource: g.DS,
      query: { query: query, refId: 'PrometheusVariableQueryEditor-VariableQuery' },
      refresh: 2,
      regex: '',
      sort: 1,
      multi: true,
      includeAll: true,
      allValue: '.*',
      current: { selected: true, text: ['All'], value: ['$__all'] },
      options: [],
      hide: 0,
      skipUrlSync: false,
    }
    for name in ['broker'] + names
  ],

  // filters: the query variables besides broker (which every dashboard has), only those the
  // panels can filter on (a drop-down that changes nothing would mislead).
  dashboard(uid, title, description, sections, filters): {
    annotations: {
      list: [{
        builtIn: 1,
        datasource: { type: 'grafana', uid: '-- Grafana --' },
        enable: true,
        hide: true,
        iconColor: 'rgba(0, 211, 255, 1)',
        name: 'Annotations & Alerts',
        type: 'dashboard',
      }],
    },
    description: description,
    editable: true,
    fiscalYearStartMonth: 0,
    graphTooltip: 1,
    id: null,
    links: [{
      asDropdown: false,
      icon: 'external link',
      includeVars: true,
      keepTime: true,
      tags: cfg.dashboardTags,
      targetBlank: false,
      title: 'Celery dashboards',
      tooltip: '',
      type: 'dashboards',
    }],
    panels: g.layout(sections),
    refresh: cfg.dashboardRefresh,
    schemaVersion: g.SCHEMA_VERSION,
    tags: cfg.dashboardTags,
    templating: { list: g.variables(filters) },
    time: { from: 'now-6h', to: 'now' },
    timepicker: {},
    timezone: 'browser',
    title: title,
    uid: uid,
    version: 1,
    weekStart: '',
  },

  // ---------------------------------------------------------------------------------------
  // Shared expressions

  // A quantile of a task histogram: from its native form where Prometheus stores one
  // (--enable-feature=native-histograms), else from the classic buckets (`or` keeps the
  // left side's series); `>= 0` drops the NaN of a window with no task.
  quantile(q, histogram, filters, by=''):
    local group = if by != '' then 'le, ' + by else 'le';
    local nativeSum = if by != '' then 'sum by (%s)' % by else 'sum';
    local name = 'celery_task_%s_seconds' % histogram;
    '(histogram_quantile(%g, %s (rate(%s{%s}[%s])))\n' % [q, nativeSum, name, filters, g.R]
    + ' or histogram_quantile(%g, sum by (%s) (rate(%s_bucket{%s}[%s])))) >= 0'
      % [q, group, name, filters, g.R],

  // The mean of a task histogram over the window, native form first as in quantile().
  mean(histogram, filters, by):
    local name = 'celery_task_%s_seconds' % histogram;
    local native = 'rate(%s{%s}[%s])' % [name, filters, g.R];
    std.join('\n', [
      'sum by (%s) (histogram_sum(%s))' % [by, native],
      '/ (sum by (%s) (histogram_count(%s)) > 0)' % [by, native],
      'or sum by (%s) (rate(%s_sum{%s}[%s]))' % [by, name, filters, g.R],
      '/ (sum by (%s) (rate(%s_count{%s}[%s])) > 0)' % [by, name, filters, g.R],
    ]),

  failure_ratio(by, filters, window=g.R):
    local group = if by != '' then ' by (%s)' % by else '';
    'sum%s (rate(celery_task_failed_total{%s}[%s]))\n' % [group, filters, window]
    + '/ (sum%s (rate(%s[%s])) > 0)' % [group, g.finished(filters), window],

  UP_DOWN: g.value_map({ '0': ['DOWN', 'red'], '1': ['UP', 'green'] }),
  HEARTBEAT_AGE:
    'time() - max by (%s) (celery_worker_last_heartbeat_timestamp_seconds{%s})'
    % [g.BY_WORKER, g.W],
  SATURATION:
    'max by (%s) (celery_worker_busy_processes{%s})\n' % [g.BY_WORKER, g.W]
    + '/ max by (%s) (celery_worker_pool_processes{%s} > 0)' % [g.BY_WORKER, g.W],
}
