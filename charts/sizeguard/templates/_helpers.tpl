{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "sizeguard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Fully qualified app name. */}}
{{- define "sizeguard.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sizeguard.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "sizeguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "sizeguard.webhookSelector" -}}
app.kubernetes.io/name: {{ include "sizeguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end -}}

{{- define "sizeguard.mcpSelector" -}}
app.kubernetes.io/name: {{ include "sizeguard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: mcp-server
{{- end -}}

{{- define "sizeguard.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "sizeguard.webhookService" -}}
{{- printf "%s-webhook" (include "sizeguard.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sizeguard.tlsSecret" -}}
{{- printf "%s-webhook-tls" (include "sizeguard.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sizeguard.jwksSecret" -}}
{{- default (printf "%s-jwks" (include "sizeguard.fullname" .)) .Values.jwks.existingSecret -}}
{{- end -}}

{{/* Webhook names: "workloads.sizeguard.io" for a release named sizeguard, else prefixed. */}}
{{- define "sizeguard.webhookPrefix" -}}
{{- $full := include "sizeguard.fullname" . -}}
{{- if eq $full "sizeguard" -}}{{- else -}}{{ $full }}.{{- end -}}
{{- end -}}

{{/* Namespaces the webhook never sees: the configured ones and the release namespace. */}}
{{- define "sizeguard.excludedNamespaces" -}}
{{- $all := append .Values.webhook.excludedNamespaces .Release.Namespace | uniq -}}
{{- toJson $all -}}
{{- end -}}
