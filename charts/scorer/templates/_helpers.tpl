{{/* Names and labels, as `helm create` makes them. */}}
{{- define "scorer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "scorer.fullname" -}}
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

{{- define "scorer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scorer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "scorer.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "scorer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: {{ .Values.mode }}
{{- end }}

{{- define "scorer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "scorer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "scorer.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) }}
{{- end }}

{{/* The Secret and key SCORER_AUTH_TOKEN comes from; empty when no token is configured. */}}
{{- define "scorer.authSecret" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecret }}{{- else if .Values.auth.token }}{{ include "scorer.fullname" . }}-auth{{- end }}
{{- end }}

{{- define "scorer.authSecretKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{- else }}token{{- end }}
{{- end }}

{{/* The one bundle source set (pvc, image, registry), or "" for the image's own bundle. */}}
{{- define "scorer.bundleSource" -}}
{{- if .Values.bundle.pvc.claimName }}pvc{{- else if .Values.bundle.image.path }}image{{- else if .Values.bundle.registry.uri }}registry{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds: the value given, else preStop + drain + shutdown grace + 5. */}}
{{- define "scorer.terminationGrace" -}}
{{- $needed := add .Values.preStopSleepSeconds .Values.server.drainSeconds .Values.server.shutdownGraceSeconds }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}{{ add $needed 5 }}{{- else }}{{ .Values.terminationGracePeriodSeconds }}{{- end }}
{{- end }}

{{/*
Contradictions a schema cannot state with a useful message: each fails the render with one line
naming the keys. (values.schema.json checks types, ranges, required keys and unknown keys.)
*/}}
{{- define "scorer.validate" -}}
{{- $sources := list }}
{{- if .Values.bundle.pvc.claimName }}{{ $sources = append $sources "bundle.pvc.claimName" }}{{ end }}
{{- if .Values.bundle.image.path }}{{ $sources = append $sources "bundle.image.path" }}{{ end }}
{{- if .Values.bundle.registry.uri }}{{ $sources = append $sources "bundle.registry.uri" }}{{ end }}
{{- if gt (len $sources) 1 }}
{{- fail (printf "two bundle sources: %s are both set; set only one (a PVC, the image, or a registry)" (join " and " $sources)) }}
{{- end }}
{{- if and .Values.bundle.registry.uri (not .Values.bundle.registry.trackingUri) }}
{{- fail "bundle.registry.uri needs bundle.registry.trackingUri (MLFLOW_TRACKING_URI)" }}
{{- end }}
{{- if and .Values.auth.token .Values.auth.existingSecret }}
{{- fail "auth.token and auth.existingSecret are both set: give the token inline or name a Secret, not both" }}
{{- end }}
{{- if and (eq .Values.mode "serve") .Values.autoscaling.enabled }}
{{- $min := int .Values.autoscaling.minReplicas }}
{{- $max := int .Values.autoscaling.maxReplicas }}
{{- if gt $min $max }}
{{- fail (printf "autoscaling.minReplicas (%d) is above autoscaling.maxReplicas (%d)" $min $max) }}
{{- end }}
{{- if not (kindIs "invalid" .Values.replicas) }}
{{- $replicas := int .Values.replicas }}
{{- if or (lt $replicas $min) (gt $replicas $max) }}
{{- fail (printf "replicas (%d) with autoscaling.enabled: the HorizontalPodAutoscaler keeps between autoscaling.minReplicas and autoscaling.maxReplicas (%d..%d) pods and cannot honour it; set replicas within that range or to null" $replicas $min $max) }}
{{- end }}
{{- end }}
{{- end }}
{{- if not (kindIs "invalid" .Values.terminationGracePeriodSeconds) }}
{{- $needed := add .Values.preStopSleepSeconds .Values.server.drainSeconds .Values.server.shutdownGraceSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $needed) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds + server.drainSeconds + server.shutdownGraceSeconds (%d): the kubelet would kill requests still in flight" (int .Values.terminationGracePeriodSeconds) (int $needed)) }}
{{- end }}
{{- end }}
{{- if eq .Values.mode "batch" }}
{{- if not .Values.batch.input.claimName }}{{ fail "mode batch needs batch.input.claimName (the claim holding the input)" }}{{ end }}
{{- if not .Values.batch.output.claimName }}{{ fail "mode batch needs batch.output.claimName (the claim the output is written to)" }}{{ end }}
{{- end }}
{{- end }}

{{/* The pod spec both modes share: identity, isolation, scheduling. */}}
{{- define "scorer.podCommon" -}}
serviceAccountName: {{ include "scorer.serviceAccountName" . }}
# scorer never calls the Kubernetes API.
automountServiceAccountToken: false
# Off: a Service named like the release (`scorer`) would otherwise inject SCORER_PORT=tcp://..., and
# SCORER_SERVICE_HOST, which scorer refuses as settings (unknown SCORER_* variables are an error).
enableServiceLinks: false
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* The container's settings both modes share (indented as a container's keys). */}}
{{- define "scorer.containerCommon" -}}
image: {{ include "scorer.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  runAsNonRoot: true
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  capabilities:
    drop: [ALL]
resources:
  {{- toYaml .Values.resources | nindent 2 }}
{{- end }}

{{/* Environment for the bundle source (a list of EnvVar). */}}
{{- define "scorer.bundleEnv" -}}
{{- $source := include "scorer.bundleSource" . }}
{{- if eq $source "pvc" }}
- name: SCORER_BUNDLE
  value: {{ printf "/bundles/%s" (.Values.bundle.pvc.path | trimPrefix "/") | trimSuffix "/" | quote }}
{{- else if eq $source "image" }}
- name: SCORER_BUNDLE
  value: {{ .Values.bundle.image.path | quote }}
{{- else if eq $source "registry" }}
- name: SCORER_BUNDLE
  value: {{ .Values.bundle.registry.uri | quote }}
- name: MLFLOW_TRACKING_URI
  value: {{ .Values.bundle.registry.trackingUri | quote }}
{{- with .Values.bundle.registry.registryUri }}
- name: MLFLOW_REGISTRY_URI
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- with .Values.bundle.digest }}
- name: SCORER_BUNDLE_DIGEST
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "scorer.envFrom" -}}
{{- with .Values.bundle.registry.credentialsSecret }}
- secretRef:
    name: {{ . }}
{{- end }}
{{- with .Values.envFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes both modes mount: /tmp, and the bundle's claim. */}}
{{- define "scorer.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.bundle.pvc.claimName }}
- name: bundles
  mountPath: /bundles
  readOnly: true
{{- end }}
{{- end }}

{{- define "scorer.volumes" -}}
- name: tmp
  emptyDir:
    {{- with .Values.tmp.medium }}
    medium: {{ . }}
    {{- end }}
    sizeLimit: {{ .Values.tmp.sizeLimit }}
{{- with .Values.bundle.pvc.claimName }}
- name: bundles
  persistentVolumeClaim:
    claimName: {{ . }}
    readOnly: true
{{- end }}
{{- end }}
