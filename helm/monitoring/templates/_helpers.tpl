{{- define "monitoring.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bbbfleet
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* One EC2-discovered job: hosts of the fleet's ASG that are running, on `port`. */}}
{{- define "monitoring.ec2Job" -}}
- job_name: {{ .job }}
  scrape_interval: {{ .fleet.scrapeInterval }}
  scrape_timeout: {{ .fleet.scrapeTimeout }}
  ec2_sd_configs:
    - region: {{ .fleet.region }}
      port: {{ .port }}
      refresh_interval: {{ .fleet.refreshInterval }}
      filters:
        - name: tag:aws:autoscaling:groupName
          values: [{{ .fleet.asgName | quote }}]
        - name: instance-state-name
          values: [running]
  relabel_configs:
    # The private address: Prometheus runs in the VPC, the only place the port is open.
    - source_labels: [__meta_ec2_private_ip]
      regex: (.+)
      replacement: ${1}:{{ .port }}
      target_label: __address__
    # instance_id is what bbbscaler (metrics.instance_label) and the dashboards key on.
    - source_labels: [__meta_ec2_instance_id]
      target_label: instance_id
    - source_labels: [__meta_ec2_tag_aws_autoscaling_groupName]
      target_label: asg
    - source_labels: [__meta_ec2_availability_zone]
      target_label: availability_zone
    - source_labels: [__meta_ec2_instance_type]
      target_label: instance_type
{{- end -}}

{{- define "monitoring.scrapeConfigs" -}}
{{- include "monitoring.ec2Job" (dict "job" "bbbnode" "port" (int .Values.fleet.bbbnodePort) "fleet" .Values.fleet) }}
{{- if .Values.fleet.nodeExporter.enabled }}
{{ include "monitoring.ec2Job" (dict "job" "node" "port" (int .Values.fleet.nodeExporter.port) "fleet" .Values.fleet) }}
{{- end }}
{{- end -}}
