{{/* Names, labels and computed values shared by the templates. */}}

{{- define "candlelight.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* <release>-candlelight, or the release name alone when it already contains the chart name. */}}
{{- define "candlelight.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A component's object name: <fullname>-<component>, at most 63 characters. */}}
{{- define "candlelight.componentName" -}}
{{- printf "%s-%s" (include "candlelight.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "candlelight.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object; call with (dict "root" $ "component" "server"). */}}
{{- define "candlelight.labels" -}}
helm.sh/chart: {{ include "candlelight.chart" .root }}
{{ include "candlelight.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: candlelight
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels; immutable on Deployments, so keep them minimal. */}}
{{- define "candlelight.selectorLabels" -}}
app.kubernetes.io/name: {{ include "candlelight.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "candlelight.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "candlelight.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The server image: the CUDA tag when gpu.enabled. */}}
{{- define "candlelight.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.gpu.enabled }}
{{- $tag = default (printf "%s-cuda" $tag) .Values.gpu.imageTag }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/* The loadgen image: always the CPU build (loadgen needs no GPU). */}}
{{- define "candlelight.loadgenImage" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
terminationGracePeriodSeconds of the server pods. Kubernetes counts the
preStop hook inside the grace period, then sends SIGTERM; the server drains for
up to shutdownGraceSeconds and then flushes telemetry. A smaller explicit value
would SIGKILL the pod mid-drain, so it fails the render.
*/}}
{{- define "candlelight.terminationGracePeriodSeconds" -}}
{{- $s := .Values.server }}
{{- $needed := add $s.preStop.sleepSeconds $s.shutdownGraceSeconds $s.telemetryFlushSeconds }}
{{- if kindIs "invalid" $s.terminationGracePeriodSeconds }}
{{- $needed }}
{{- else if lt (int $s.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "server.terminationGracePeriodSeconds=%d is less than preStop.sleepSeconds (%d) + shutdownGraceSeconds (%d) + telemetryFlushSeconds (%d) = %d: Kubernetes would kill the server mid-drain. Raise it or leave it null to compute it." (int $s.terminationGracePeriodSeconds) (int $s.preStop.sleepSeconds) (int $s.shutdownGraceSeconds) (int $s.telemetryFlushSeconds) (int $needed)) }}
{{- else }}
{{- $s.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{- define "candlelight.apiKeySecretName" -}}
{{- default (include "candlelight.componentName" (dict "root" . "component" "api-key")) .Values.auth.existingSecret }}
{{- end }}

{{/* env entry reading the API key from its Secret. */}}
{{- define "candlelight.apiKeyEnv" -}}
- name: CANDLELIGHT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "candlelight.apiKeySecretName" . }}
      key: {{ .Values.auth.secretKey }}
{{- end }}

{{/* Restricted pod security: non-root, RuntimeDefault seccomp. */}}
{{- define "candlelight.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "candlelight.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "candlelight.collectorAgentName" -}}
{{- include "candlelight.componentName" (dict "root" . "component" "otel-agent") }}
{{- end }}

{{- define "candlelight.collectorGatewayName" -}}
{{- include "candlelight.componentName" (dict "root" . "component" "otel-gateway") }}
{{- end }}

{{- define "candlelight.eppName" -}}
{{- include "candlelight.componentName" (dict "root" . "component" "epp") }}
{{- end }}

{{- define "candlelight.collectorImage" -}}
{{- printf "%s:%s" .Values.collectors.image.repository .Values.collectors.image.tag }}
{{- end }}

{{/* prometheus-adapter rules for the HPA metric; also valid as the adapter chart's `rules.custom` / `rules.external`. */}}
{{- define "candlelight.prometheusAdapterRules" -}}
{{- $metric := .Values.autoscaling.metricName -}}
{{- $series := printf "%s{job=\"%s\",namespace!=\"\",pod!=\"\"}" $metric .Values.metricsJob -}}
rules:
  - seriesQuery: {{ $series | quote }}
    resources:
      overrides:
        namespace: {resource: namespace}
        pod: {resource: pod}
    name:
      matches: {{ printf "^%s$" $metric | quote }}
      as: {{ $metric | quote }}
    # One series per pod; max guards against a duplicate scrape.
    metricsQuery: "max by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})"
externalRules:
  - seriesQuery: {{ $series | quote }}
    resources:
      overrides:
        namespace: {resource: namespace}
    name:
      matches: {{ printf "^%s$" $metric | quote }}
      as: {{ $metric | quote }}
    # The HPA's selector (release and component labels, which the PodMonitor
    # copies from the pod) picks this release's servers; the namespace comes
    # from the HPA's own namespace.
    metricsQuery: "sum by (<<.GroupBy>>) (<<.Series>>{<<.LabelMatchers>>})"
{{- end }}

{{/*
The endpoint picker's EndpointPickerConfig (llm-d-router v0.10.0,
apix/config/v1alpha1). core-metrics-extractor maps the model-server protocol's
metrics to candlelight's names for pods labelled llm-d.ai/engine-type=candlelight
(and for unlabelled pods: defaultEngine). candlelight has no LoRA adapters
(loraSpec empty). Its cache info gauge is
candlelight_cache_config_info{candlelight_kv_block_size="16",candlelight_kv_blocks="..."}:
the OTel attributes candlelight.kv.block_size and candlelight.kv.blocks keep
their namespace as a prefix in Prometheus, so both label names are set here
(the EPP's defaults, block_size and num_gpu_blocks, would find nothing).
*/}}
{{- define "candlelight.eppConfig" -}}
{{- $epp := .Values.inferenceGateway.epp -}}
apiVersion: llm-d.ai/v1alpha1
kind: EndpointPickerConfig
plugins:
  - type: queue-scorer
  - type: kv-cache-utilization-scorer
  - type: prefix-cache-scorer
  - type: metrics-data-source
    parameters:
      scheme: http
      path: /metrics
      {{- with $epp.scrapeInterval }}
      interval: {{ . | quote }}
      {{- end }}
  - type: core-metrics-extractor
    parameters:
      engineLabelKey: llm-d.ai/engine-type
      defaultEngine: candlelight
      engineConfigs:
        - name: candlelight
          queuedRequestsSpec: candlelight_requests_waiting
          runningRequestsSpec: candlelight_requests_running
          kvUsageSpec: candlelight_kv_cache_utilization_ratio
          loraSpec: ""
          cacheInfoSpec: candlelight_cache_config_info
          cacheBlockSizeLabelName: candlelight_kv_block_size
          cacheNumBlocksLabelName: candlelight_kv_blocks
schedulingProfiles:
  - name: default
    plugins:
      - pluginRef: queue-scorer
        weight: {{ $epp.scorerWeights.queue }}
      - pluginRef: kv-cache-utilization-scorer
        weight: {{ $epp.scorerWeights.kvCacheUtilization }}
      - pluginRef: prefix-cache-scorer
        weight: {{ $epp.scorerWeights.prefixCache }}
{{- end }}
