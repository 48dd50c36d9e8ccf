{{/* Chart name, truncated to a DNS label. */}}
{{- define "tradecache.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name: the release name, plus the chart name unless it already holds it. */}}
{{- define "tradecache.fullname" -}}
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

{{- define "tradecache.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels: stable across upgrades. */}}
{{- define "tradecache.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tradecache.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "tradecache.labels" -}}
helm.sh/chart: {{ include "tradecache.chart" . }}
{{ include "tradecache.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tradecache
tradecache/trader-id: {{ include "tradecache.traderLabel" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The trader id as a label value (63 characters at most, alphanumerics at both ends). */}}
{{- define "tradecache.traderLabel" -}}
{{- regexReplaceAll "[^A-Za-z0-9_.-]" (toString .Values.config.trader_id) "_" | trunc 63 | trimAll "-_." | quote }}
{{- end }}

{{- define "tradecache.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tradecache.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tradecache.image" -}}
{{- printf "%s:%s" .Values.tradecache.image.repository (default .Chart.AppVersion .Values.tradecache.image.tag) }}
{{- end }}

{{/* Where the secrets are mounted in the sidecar (one projected volume). */}}
{{- define "tradecache.secretsDir" -}}/run/secrets/tradecache{{- end }}

{{/* The secrets that are set, as a list of [valuesName, fileName, configSection, configKey]. */}}
{{- define "tradecache.secretFiles" -}}
{{- $all := list
  (list "redisPassword" "redis-password" "redis" "password_file")
  (list "natsPassword" "nats-password" "nats" "password_file")
  (list "natsToken" "nats-token" "nats" "token_file")
  (list "natsCreds" "nats.creds" "nats" "creds_file") }}
{{- $set := list }}
{{- range $all }}
{{- $ref := index $.Values.secrets (index . 0) }}
{{- if $ref.name }}
{{- $set = append $set . }}
{{- end }}
{{- end }}
{{- toJson $set }}
{{- end }}

{{/* The tradecache configuration file: config values + http.listen + the *_file paths. */}}
{{- define "tradecache.configFile" -}}
{{- $config := deepCopy .Values.config }}
{{- $_ := set $config "http" (dict "listen" (printf "0.0.0.0:%d" (int .Values.tradecache.port))) }}
{{- range (include "tradecache.secretFiles" . | fromJsonArray) }}
{{- $section := index . 2 }}
{{- $sectionValues := get $config $section | default dict }}
{{- $_ := set $sectionValues (index . 3) (printf "%s/%s" (include "tradecache.secretsDir" $) (index . 1)) }}
{{- $_ := set $config $section $sectionValues }}
{{- end }}
{{- toYaml $config }}
{{- end }}

{{/* The NATS URL(s) the test pod uses. */}}
{{- define "tradecache.testNatsUrl" -}}
{{- if .Values.tests.natsUrl }}
{{- .Values.tests.natsUrl }}
{{- else }}
{{- join "," (dig "nats" "servers" (list "nats://127.0.0.1:4222") .Values.config) }}
{{- end }}
{{- end }}

{{/* An HTTP probe of the sidecar from its values. */}}
{{- define "tradecache.probe" -}}
httpGet:
  path: {{ .probe.path }}
  port: {{ .port }}
initialDelaySeconds: {{ .probe.initialDelaySeconds }}
periodSeconds: {{ .probe.periodSeconds }}
timeoutSeconds: {{ .probe.timeoutSeconds }}
failureThreshold: {{ .probe.failureThreshold }}
{{- end }}
