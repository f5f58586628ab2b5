{{/*
Chart name, truncated to 63 characters (DNS label limit).
*/}}
{{- define "svcscope.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, plus the chart name unless the release name already contains it.
*/}}
{{- define "svcscope.fullname" -}}
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
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "svcscope.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "svcscope.labels" -}}
helm.sh/chart: {{ include "svcscope.chart" . }}
{{ include "svcscope.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: svcscope
{{- end }}

{{/*
Selector labels of the dashboard.
*/}}
{{- define "svcscope.selectorLabels" -}}
app.kubernetes.io/name: {{ include "svcscope.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of the demo echo backends (distinct from the dashboard's: the demo Services must never
select the dashboard pod).
*/}}
{{- define "svcscope.demoSelectorLabels" -}}
app.kubernetes.io/name: {{ include "svcscope.name" . }}-echo
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of the demo objects.
*/}}
{{- define "svcscope.demoLabels" -}}
helm.sh/chart: {{ include "svcscope.chart" . }}
{{ include "svcscope.demoSelectorLabels" . }}
app.kubernetes.io/component: demo
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: svcscope
{{- end }}

{{/*
Name of the ServiceAccount to use.
*/}}
{{- define "svcscope.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "svcscope.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference.
*/}}
{{- define "svcscope.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
RBAC rules: read-only always; each optional verb only when its value is set.
*/}}
{{- define "svcscope.rbacRules" -}}
- apiGroups: [""]
  resources: ["services", "pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
{{- if .Values.rbac.exec }}
- apiGroups: [""]
  resources: ["pods/exec"]
  verbs: ["create"]
{{- end }}
{{- if .Values.rbac.probePods }}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["create", "delete"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
{{- end }}
{{- if .Values.rbac.patchServices }}
- apiGroups: [""]
  resources: ["services"]
  verbs: ["patch"]
{{- end }}
{{- end }}

{{/*
Hardened container security context (shared by the dashboard and the demo echo backends).
*/}}
{{- define "svcscope.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Hardened pod security context.
*/}}
{{- define "svcscope.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end }}
