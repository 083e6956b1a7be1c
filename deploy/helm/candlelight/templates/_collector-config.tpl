{{/*
Collector configs, agent and gateway. Rendered into ConfigMaps; scripts/check-chart.sh
extracts them and runs `candlelight-otelcol validate` on each. Addresses are
literal (no ${env:...}) except where a component reads the environment itself.
*/}}

{{- define "candlelight.collectorTelemetry" -}}
telemetry:
  logs:
    level: {{ .Values.collectors.logLevel }}
  metrics:
    level: normal
    readers:
      - pull:
          exporter:
            prometheus:
              host: 0.0.0.0
              port: {{ .Values.collectors.selfMetricsPort }}
              without_scope_info: true
              without_units: true
              without_type_suffix: true
{{- end }}

{{/*
The agent, one per node: servers on the node send OTLP to its hostPort. It adds
the pod's Kubernetes metadata (k8sattributes, finding the pod by the
k8s.pod.uid the server sets, else by the connection's address) and forwards to
the gateway.
*/}}
{{- define "candlelight.collectorAgentConfig" -}}
{{- $c := .Values.collectors -}}
extensions:
  health_check:
    endpoint: 0.0.0.0:13133
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:4317
      http:
        endpoint: 0.0.0.0:4318
processors:
  # First: refuses data before the agent runs out of memory (the SDK retries).
  memory_limiter:
    check_interval: 1s
    limit_mib: {{ $c.agent.memoryLimitMiB }}
    spike_limit_mib: {{ $c.agent.memorySpikeLimitMiB }}
  k8sattributes:
    auth_type: serviceAccount
    passthrough: false
    # Watch only this node's pods (K8S_NODE_NAME comes from the downward API).
    filter:
      node_from_env_var: K8S_NODE_NAME
    extract:
      metadata:
        - k8s.namespace.name
        - k8s.pod.name
        - k8s.pod.uid
        - k8s.pod.start_time
        - k8s.node.name
        - k8s.replicaset.name
        - k8s.deployment.name
      labels:
        - tag_name: app.kubernetes.io/instance
          key: app.kubernetes.io/instance
          from: pod
        - tag_name: app.kubernetes.io/component
          key: app.kubernetes.io/component
          from: pod
    pod_association:
      - sources:
          - from: resource_attribute
            name: k8s.pod.uid
      - sources:
          - from: resource_attribute
            name: k8s.pod.ip
      - sources:
          - from: connection
  {{- if $c.clusterName }}
  resource:
    attributes:
      - key: k8s.cluster.name
        value: {{ $c.clusterName | quote }}
        action: upsert
  {{- end }}
  batch:
    timeout: 1s
    send_batch_size: 1024
exporters:
  # A plain ClusterIP Service: each agent holds one gRPC connection, so all of a
  # node's series reach the same gateway replica (see docs/scale-out.md).
  otlp_grpc:
    endpoint: {{ include "candlelight.collectorGatewayName" . }}.{{ .Release.Namespace }}.svc:4317
    tls:
      insecure: true
service:
  extensions: [health_check]
  pipelines:
    {{- range list "metrics" "traces" }}
    {{ . }}:
      receivers: [otlp]
      processors: [memory_limiter, k8sattributes{{ if $c.clusterName }}, resource{{ end }}, batch]
      exporters: [otlp_grpc]
    {{- end }}
  {{- include "candlelight.collectorTelemetry" . | nindent 2 }}
{{- end }}

{{/*
The gateway: batches, serves metrics to Prometheus (prometheus exporter, same
naming as otel-collector.yaml) and sends traces to Tempo.
*/}}
{{- define "candlelight.collectorGatewayConfig" -}}
{{- $g := .Values.collectors.gateway -}}
extensions:
  health_check:
    endpoint: 0.0.0.0:13133
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 0.0.0.0:4317
      http:
        endpoint: 0.0.0.0:4318
processors:
  memory_limiter:
    check_interval: 1s
    limit_mib: {{ $g.memoryLimitMiB }}
    spike_limit_mib: {{ $g.memorySpikeLimitMiB }}
  batch:
    timeout: 1s
    send_batch_size: 8192
exporters:
  prometheus:
    endpoint: 0.0.0.0:{{ $g.prometheusPort }}
    translation_strategy: UnderscoreEscapingWithSuffixes
    enable_open_metrics: true
    # job from service.name, instance from service.instance.id (the pod name);
    # other resource attributes stay on target_info.
    metric_expiration: {{ $g.metricExpiration }}
  otlp_grpc:
    endpoint: {{ $g.tempoEndpoint }}
    tls:
      insecure: {{ $g.tempoInsecure }}
service:
  extensions: [health_check]
  pipelines:
    metrics:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [prometheus]
    traces:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [otlp_grpc]
  {{- include "candlelight.collectorTelemetry" . | nindent 2 }}
{{- end }}
