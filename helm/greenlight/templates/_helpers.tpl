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

{{/* ref@digest, after checking the digest's shape (an image pinned by its content). */}}
{{- define "bbbfleet.pinnedImage" -}}
{{- if .digest -}}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" .digest) -}}
{{- fail (printf "image digest %q is not sha256:<64 hex digits>" .digest) -}}
{{- end -}}
{{ printf "%s@%s" .ref .digest }}
{{- else -}}
{{ .ref }}
{{- end -}}
{{- end -}}

{{/* Egress to the cluster's DNS (CoreDNS in kube-system, as EKS deploys it). */}}
{{- define "bbbfleet.dnsEgress" -}}
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: kube-system
      podSelector:
        matchLabels:
          k8s-app: kube-dns
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}

{{/* Egress to CIDRs on TCP ports: .cidrs, .ports. */}}
{{- define "bbbfleet.cidrEgress" -}}
- to:
    {{- range .cidrs }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  ports:
    {{- range .ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end -}}
