{{/* Object names, labels and shared snippets. */}}

{{- define "mooring.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mooring.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "mooring.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mooring.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: principal
{{- end -}}

{{- define "mooring.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "mooring.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mooring
{{- end -}}

{{- define "mooring.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mooring.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mooring.headless" -}}
{{- printf "%s-headless" (include "mooring.fullname" .) -}}
{{- end -}}

{{- define "mooring.tlsSecret" -}}
{{- if .Values.tls.certManager.enabled -}}
{{- printf "%s-tls" (include "mooring.fullname" .) -}}
{{- else -}}
{{- required "tls.existingSecret (a kubernetes.io/tls Secret with ca.crt) or tls.certManager.enabled is required" .Values.tls.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "mooring.redisURL" -}}
{{- if .Values.redis.bundled.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "mooring.fullname" .) -}}
{{- else -}}
{{- required "redis.url (an external Redis) or redis.bundled.enabled is required" .Values.redis.url -}}
{{- end -}}
{{- end -}}

{{- define "mooring.advertise" -}}
{{- if eq .Values.advertise.mode "template" -}}
{{- $host := required "advertise.hostTemplate is required with advertise.mode template" .Values.advertise.hostTemplate -}}
{{- printf "%s:%v" ($host | replace "{pod}" "$(POD_NAME)") .Values.advertise.port -}}
{{- else -}}
{{- printf "$(POD_NAME).%s.$(POD_NAMESPACE).svc:%v" (include "mooring.headless" .) .Values.principal.port -}}
{{- end -}}
{{- end -}}

{{- define "mooring.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Cross-field checks the schema cannot express; each fails with one clear line. */}}
{{- define "mooring.validate" -}}
{{- $e := .Values.principal.election -}}
{{- if not (lt (float64 $e.renewDeadline) (float64 $e.leaseDuration)) -}}
{{- fail (printf "principal.election.renewDeadline (%v) must be below leaseDuration (%v)" $e.renewDeadline $e.leaseDuration) -}}
{{- end -}}
{{- if not (gt (float64 $e.renewDeadline) (mulf 1.2 (float64 $e.retryPeriod))) -}}
{{- fail (printf "principal.election.renewDeadline (%v) must exceed 1.2 x retryPeriod (%v)" $e.renewDeadline $e.retryPeriod) -}}
{{- end -}}
{{- if and .Values.redis.bundled.enabled .Values.redis.url -}}
{{- fail "set either redis.url (external) or redis.bundled.enabled, not both" -}}
{{- end -}}
{{- if and .Values.tls.certManager.enabled .Values.tls.existingSecret -}}
{{- fail "set either tls.existingSecret or tls.certManager.enabled, not both" -}}
{{- end -}}
{{- if and .Values.replicaServices.enabled (ne .Values.advertise.mode "template") -}}
{{- fail "replicaServices.enabled needs advertise.mode=template (the names agents dial to reach each replica's Service)" -}}
{{- end -}}
{{- end -}}
