{{- define "greenlight.selectorLabels" -}}
app.kubernetes.io/name: greenlight
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "greenlight.labels" -}}
{{ include "greenlight.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bbbfleet
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "greenlight.secretEnv" -}}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
{{- end -}}
