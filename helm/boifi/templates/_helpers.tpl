{{/*
Chart name, cut to 63 characters (a DNS label).
*/}}
{{- define "boifi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: "<release>-<chart>" (or the release name alone when it already contains the chart
name), cut to 63 characters. Component names append a suffix to it.
*/}}
{{- define "boifi.fullname" -}}
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

{{/*
"<chart>-<version>" for the helm.sh/chart label.
*/}}
{{- define "boifi.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Component full names. The suffix is cut from the prefix, not from the suffix, so two components
never collapse into one name.
*/}}
{{- define "boifi.componentName" -}}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "boifi.fullname" (index . 0) | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}
{{- define "boifi.policyApi.fullname" -}}
{{- include "boifi.componentName" (list . "policy-api") }}
{{- end }}
{{- define "boifi.sseBroadcaster.fullname" -}}
{{- include "boifi.componentName" (list . "sse-broadcaster") }}
{{- end }}
{{- define "boifi.sseBroadcaster.headlessName" -}}
{{- include "boifi.componentName" (list . "sse-broadcaster-headless") }}
{{- end }}
{{- define "boifi.etcd.fullname" -}}
{{- include "boifi.componentName" (list . "etcd") }}
{{- end }}
{{- define "boifi.etcd.headlessName" -}}
{{- include "boifi.componentName" (list . "etcd-headless") }}
{{- end }}
{{- define "boifi.plugin.fullname" -}}
{{- include "boifi.componentName" (list . "plugin") }}
{{- end }}
{{- define "boifi.tokens.fullname" -}}
{{- include "boifi.componentName" (list . "tokens") }}
{{- end }}

{{/*
Selector labels: only name, instance and component, so they never change on upgrade.
Call with (dict "ctx" $ "component" "policy-api").
*/}}
{{- define "boifi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "boifi.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Every object's labels: the selector labels plus version, managed-by, chart and commonLabels.
Call with (dict "ctx" $ "component" "policy-api").
*/}}
{{- define "boifi.labels" -}}
{{ include "boifi.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: boifi
helm.sh/chart: {{ include "boifi.chart" .ctx }}
{{- with .ctx.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Image reference: [imageRegistry/]repository(@digest | :tag), the tag defaulting to appVersion.
Call with (dict "ctx" $ "image" .Values.policyApi.image).
*/}}
{{- define "boifi.image" -}}
{{- $repo := .image.repository }}
{{- with .ctx.Values.imageRegistry }}
{{- $repo = printf "%s/%s" . $repo }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .ctx.Chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/*
The ServiceAccount the pods run as.
*/}}
{{- define "boifi.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "boifi.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
BOIFI_ETCD_ENDPOINTS: the in-chart members by their stable DNS names, or the external endpoints.
*/}}
{{- define "boifi.etcd.endpoints" -}}
{{- if .Values.etcd.enabled }}
{{- $etcd := include "boifi.etcd.fullname" . }}
{{- $domain := printf "%s.%s.svc.%s" (include "boifi.etcd.headlessName" .) .Release.Namespace .Values.clusterDomain }}
{{- $urls := list }}
{{- range $i := until (int .Values.etcd.replicaCount) }}
{{- $urls = append $urls (printf "http://%s-%d.%s:2379" $etcd $i $domain) }}
{{- end }}
{{- join "," $urls }}
{{- else }}
{{- if not .Values.externalEtcd.endpoints }}
{{- fail "etcd.enabled is false: set externalEtcd.endpoints to your etcd client URLs" }}
{{- end }}
{{- join "," .Values.externalEtcd.endpoints }}
{{- end }}
{{- end }}

{{/*
The sse-broadcaster's Service FQDN, and the Istio cluster name sidecars reach it through.
*/}}
{{- define "boifi.sseBroadcaster.fqdn" -}}
{{- printf "%s.%s.svc.%s" (include "boifi.sseBroadcaster.fullname" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}
{{/*
BOIFI_BROADCASTERS of policy-api: the headless Service, which resolves to every ready
broadcaster replica, on the port the container listens on (policy-api connects to the pods).
*/}}
{{- define "boifi.sseBroadcaster.replicasUrl" -}}
{{- printf "http://%s.%s.svc.%s:8081" (include "boifi.sseBroadcaster.headlessName" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}
{{- define "boifi.sseBroadcaster.istioCluster" -}}
{{- printf "outbound|%d||%s" (int .Values.sseBroadcaster.service.port) (include "boifi.sseBroadcaster.fqdn" .) }}
{{- end }}

{{/*
The plugin's module URL: plugin.url, or oci://[imageRegistry/]repository:tag.
*/}}
{{- define "boifi.plugin.url" -}}
{{- if .Values.plugin.url }}
{{- .Values.plugin.url }}
{{- else }}
{{- $repo := .Values.plugin.image.repository }}
{{- with .Values.imageRegistry }}
{{- $repo = printf "%s/%s" . $repo }}
{{- end }}
{{- printf "oci://%s:%s" $repo (default .Chart.AppVersion .Values.plugin.image.tag) }}
{{- end }}
{{- end }}

{{/*
The plugin's pluginConfig (design.md contract): the broadcaster's Istio cluster and authority,
plus plugin.extraConfig. The computed keys win over extraConfig.
*/}}
{{- define "boifi.plugin.config" -}}
{{- $computed := dict "broadcaster_cluster" (include "boifi.sseBroadcaster.istioCluster" .) "broadcaster_authority" (printf "%s:%d" (include "boifi.sseBroadcaster.fqdn" .) (int .Values.sseBroadcaster.service.port)) }}
{{- toYaml (merge $computed (deepCopy .Values.plugin.extraConfig)) }}
{{- end }}

{{/*
Environment every BOIFI service gets (design.md contract).
*/}}
{{- define "boifi.commonEnv" -}}
- name: BOIFI_ETCD_ENDPOINTS
  value: {{ include "boifi.etcd.endpoints" . | quote }}
- name: BOIFI_ETCD_PREFIX
  value: {{ .Values.etcdPrefix | quote }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- end }}

{{/*
Prometheus scrape annotations for a pod serving /metrics on the given port.
Call with (dict "ctx" $ "port" 8080).
*/}}
{{- define "boifi.metricsAnnotations" -}}
{{- if .ctx.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: "/metrics"
{{- end }}
{{- end }}

{{/*
Fail unless a container can read the files of a Secret volume, under kubelet's rules
(kubernetes v1.31: pkg/volume/secret/secret.go, pkg/volume/util/atomic_writer.go,
pkg/volume/volume_linux.go SetVolumeOwnership): kubelet writes each file as root:root with the
volume's mode; a pod fsGroup changes the group to fsGroup, adds 0440 to the mode, and is a
supplementary group of every container. Without fsGroup the container reads through the owner
bits (uid 0), the group bits (runAsGroup or a supplementalGroup of 0) or the other bits. An
unset runAsUser is the image's user (65532, non-root); an unset runAsGroup is not assumed to be 0.
Call with (dict "ctx" $ "mode" 0440 "what" "policy-api's tokens Secret").
*/}}
{{- define "boifi.requireReadableSecret" -}}
{{- $pod := .ctx.Values.podSecurityContext | default dict }}
{{- $ctr := .ctx.Values.containerSecurityContext | default dict }}
{{- $uid := 65532 }}
{{- $groups := list }}
{{- $fsGroup := false }}
{{- range $sc := list $pod $ctr }}
{{- if not (kindIs "invalid" (index $sc "runAsUser")) }}
{{- $uid = int (index $sc "runAsUser") }}
{{- end }}
{{- end }}
{{- $gid := index $pod "runAsGroup" }}
{{- if not (kindIs "invalid" (index $ctr "runAsGroup")) }}
{{- $gid = index $ctr "runAsGroup" }}
{{- end }}
{{- if not (kindIs "invalid" $gid) }}
{{- $groups = append $groups (int $gid) }}
{{- end }}
{{- range (index $pod "supplementalGroups" | default list) }}
{{- $groups = append $groups (int .) }}
{{- end }}
{{- if not (kindIs "invalid" (index $pod "fsGroup")) }}
{{- $fsGroup = true }}
{{- end }}
{{- $mode := int .mode }}
{{- $readable := $fsGroup }}
{{- if and (not $readable) (eq $uid 0) }}
{{- $readable = eq 1 (mod (div $mode 256) 2) }}
{{- else if and (not $readable) (has 0 $groups) }}
{{- $readable = eq 1 (mod (div $mode 32) 2) }}
{{- else if not $readable }}
{{- $readable = eq 1 (mod (div $mode 4) 2) }}
{{- end }}
{{- if not $readable }}
{{- fail (printf "%s would be unreadable: kubelet writes Secret files as root:root with mode %#o, and only a pod fsGroup gives them a group the container has; this container runs as uid %d with groups %v and podSecurityContext has no fsGroup. Set podSecurityContext.fsGroup (default 65532; do not set it to null)" .what $mode $uid $groups) }}
{{- end }}
{{- end }}

{{/*
The plugin's Prometheus relabel rules (files/plugin-metric-relabel.yaml, written in Prometheus'
own metric_relabel_configs form) as prometheus-operator RelabelConfigs, keeping only BOIFI's
series first so a PodMonitor never duplicates the sidecars' other metrics.
*/}}
{{- define "boifi.plugin.metricRelabelings" -}}
- sourceLabels: [__name__]
  regex: "boifi_.*"
  action: keep
{{- range (.Files.Get "files/plugin-metric-relabel.yaml" | fromYamlArray) }}
- sourceLabels: {{ toJson .source_labels }}
  {{- with .separator }}
  separator: {{ . | quote }}
  {{- end }}
  regex: {{ .regex | quote }}
  targetLabel: {{ .target_label | quote }}
  replacement: {{ .replacement | quote }}
  action: {{ .action }}
{{- end }}
{{- end }}
