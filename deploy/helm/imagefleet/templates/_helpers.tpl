{{/* Names, labels and shared blocks. */}}

{{- define "imagefleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "imagefleet.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "imagefleet.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "imagefleet.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{- define "imagefleet.orchestratorImage" -}}
{{- $image := .Values.orchestrator.image -}}
{{- printf "%s:%s" ($image.repository | default (printf "%s/orchestrator" .Values.image.registry)) ($image.tag | default (include "imagefleet.tag" .)) -}}
{{- end -}}

{{- define "imagefleet.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "imagefleet.fullname" .)) -}}
{{- end -}}

{{/* The orchestrator's environment: settings from the ConfigMap, secrets from the Secret. */}}
{{- define "imagefleet.orchestratorEnvFrom" -}}
- configMapRef:
    name: {{ include "imagefleet.fullname" . }}-config
- secretRef:
    name: {{ include "imagefleet.secretName" . }}
{{- end -}}

{{- define "imagefleet.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "imagefleet.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Fails the render with a message an operator can act on. */}}
{{- define "imagefleet.validate" -}}
{{- if and (gt (int .Values.orchestrator.replicas) 1) (not .Values.s3.bucket) -}}
{{- fail "orchestrator.replicas > 1 needs an S3-compatible artifact store (set s3.bucket): replicas share nothing but the database and the bucket" -}}
{{- end -}}
{{- if and (not .Values.secrets.existingSecret) (not .Values.secrets.databaseUrl) -}}
{{- fail "set secrets.databaseUrl (postgresql://user:pass@host:5432/db) or name a Secret holding IMAGEFLEET_DATABASE_URL in secrets.existingSecret" -}}
{{- end -}}
{{- if and .Values.keda.enabled (not .Values.keda.prometheusServerAddress) -}}
{{- fail "keda.enabled needs keda.prometheusServerAddress: the Prometheus server that scrapes the orchestrator's /metrics" -}}
{{- end -}}
{{- $names := dict -}}
{{- range .Values.workerPools -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" (.name | default "")) -}}
{{- fail (printf "workerPools: pool name %q must be lower-case letters, digits and '-' (it names Kubernetes objects)" (.name | default "")) -}}
{{- end -}}
{{- if hasKey $names .name -}}
{{- fail (printf "workerPools: pool name %q is used twice" .name) -}}
{{- end -}}
{{- $_ := set $names .name true -}}
{{- end -}}
{{- end -}}
