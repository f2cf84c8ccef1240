{{- define "bbbscaler.name" -}}
{{- .Chart.Name -}}
{{- end -}}

{{- define "bbbscaler.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bbbscaler.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bbbscaler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bbbscaler.labels" -}}
{{ include "bbbscaler.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bbbfleet
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
bbbscaler's settings as environment variables: config.<section>.<key> becomes
BBBSCALER_<SECTION>__<KEY>, a top-level scalar BBBSCALER_<KEY>. Lists and maps go as
JSON (pydantic-settings parses them), empty strings and nulls are left out so the
program's default applies.
*/}}
{{- define "bbbscaler.configEnv" -}}
{{- range $key, $value := .Values.config }}
{{- if kindIs "map" $value }}
{{- range $sub, $v := $value }}
{{- if and (eq $key "scalelite") (eq $sub "secret") }}
{{- fail "config.scalelite.secret: put the secret in a Secret and name it in scaleliteSecret" }}
{{- end }}
{{- if and (eq $key "http") (eq $sub "listen") }}
{{- fail "config.http.listen: set `port` instead" }}
{{- end }}
{{- if not (or (kindIs "invalid" $v) (and (kindIs "string" $v) (eq $v ""))) }}
- name: {{ printf "BBBSCALER_%s__%s" $key $sub | upper }}
  value: {{ if or (kindIs "slice" $v) (kindIs "map" $v) }}{{ toJson $v | quote }}{{ else }}{{ toString $v | quote }}{{ end }}
{{- end }}
{{- end }}
{{- else if not (or (kindIs "invalid" $value) (and (kindIs "string" $value) (eq $value ""))) }}
- name: {{ printf "BBBSCALER_%s" $key | upper }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
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
