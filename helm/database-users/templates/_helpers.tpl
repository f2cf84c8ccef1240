{{- define "database-users.labels" -}}
app.kubernetes.io/name: database-users
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bbbfleet
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "database-users.selectorLabels" -}}
app.kubernetes.io/name: database-users
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "database-users.image" -}}
{{- $ref := printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" .Values.image.digest) -}}
{{- fail (printf "image digest %q is not sha256:<64 hex digits>" .Values.image.digest) -}}
{{- end -}}
{{- $ref = printf "%s@%s" $ref .Values.image.digest -}}
{{- end -}}
{{ $ref | quote }}
{{- end -}}
