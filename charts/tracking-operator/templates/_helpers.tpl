{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "tracking-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: the release name when it already contains the chart name. */}}
{{- define "tracking-operator.fullname" -}}
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

{{- define "tracking-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tracking-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tracking-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tracking-operator.labels" -}}
helm.sh/chart: {{ include "tracking-operator.chart" . }}
{{ include "tracking-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tracking-operator
{{- end }}

{{- define "tracking-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tracking-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tracking-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "tracking-operator.workerImage" -}}
{{- printf "%s:%s" .Values.operator.workerImage.repository (default .Chart.AppVersion .Values.operator.workerImage.tag) }}
{{- end }}

{{/* "true" when the operator must elect a leader: forced by value, or automatic with replicas > 1. */}}
{{- define "tracking-operator.leaderElect" -}}
{{- $v := toString .Values.leaderElection.enabled }}
{{- if eq $v "auto" }}
{{- /* At every replica count: a rolling update runs the old and new Pod together. */}}
{{- print "true" }}
{{- else }}
{{- $v }}
{{- end }}
{{- end }}

{{/* The leader-election Lease; named so the Role can grant exactly this one. */}}
{{- define "tracking-operator.leaseName" -}}
{{- include "tracking-operator.fullname" . | trunc 56 | trimSuffix "-" }}-leader
{{- end }}
