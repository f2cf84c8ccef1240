{{- define "scalelite.labels" -}}
app.kubernetes.io/name: scalelite
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: bbbfleet
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "scalelite.selectorLabels" -}}
app.kubernetes.io/name: scalelite
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* <repository>:<tag>-<component>, and @<digest> when image.digests names one. */}}
{{- define "scalelite.image" -}}
{{- $image := .root.Values.image -}}
{{- $ref := printf "%s:%s-%s" $image.repository ($image.tag | default .root.Chart.AppVersion) .component -}}
{{- $digest := get ($image.digests | default dict) .component -}}
{{ include "bbbfleet.pinnedImage" (dict "ref" $ref "digest" $digest) | quote }}
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

{{/* Pod-level settings every component shares. */}}
{{- define "scalelite.podSpec" -}}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The Rails components (api, poller, importer): Scalelite's non-root user. */}}
{{- define "scalelite.railsPodSecurity" -}}
securityContext:
  runAsNonRoot: true
  runAsUser: {{ .Values.podSecurity.runAsUser }}
  runAsGroup: {{ .Values.podSecurity.runAsGroup }}
  supplementalGroups: {{ toJson .Values.podSecurity.supplementalGroups }}
  seccompProfile:
    type: RuntimeDefault
{{- end -}}

{{- define "scalelite.railsContainerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  privileged: false
  capabilities:
    drop: ["ALL"]
{{- end -}}

{{/* Environment of every component: Scalelite's own variable names. */}}
{{- define "scalelite.env" -}}
- name: URL_HOST
  value: {{ .Values.urlHost | quote }}
- name: SECRET_KEY_BASE
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.app.name }}
      key: {{ .Values.secrets.app.secretKeyBaseKey }}
- name: LOADBALANCER_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.app.name }}
      key: {{ .Values.secrets.app.loadbalancerSecretKey }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.database.name }}
      key: {{ .Values.secrets.database.key }}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.redis.name }}
      key: {{ .Values.secrets.redis.key }}
- name: SCALELITE_API_PORT
  value: {{ .Values.api.port | quote }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{/* Rails writes its pid and cache under tmp/; the root file system is read-only. */}}
{{- define "scalelite.railsScratchMounts" -}}
- name: rails-tmp
  mountPath: /srv/scalelite/tmp
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "scalelite.railsScratchVolumes" -}}
- name: rails-tmp
  emptyDir:
    sizeLimit: 256Mi
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end -}}

{{- define "scalelite.recordingsVolume" -}}
- name: recordings
  persistentVolumeClaim:
    claimName: {{ .Release.Name }}-scalelite-recordings
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
