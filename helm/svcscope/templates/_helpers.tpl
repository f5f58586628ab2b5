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
Read-only RBAC rules: cluster-wide (ClusterRole) or per watched namespace (Role). Never a write verb here.
*/}}
{{- define "svcscope.readRules" -}}
- apiGroups: [""]
  resources: ["services", "pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/*
Write rules of each namespace in rbac.writableNamespaces; empty when no write feature is on.
*/}}
{{- define "svcscope.writeRules" -}}
{{- if .Values.rbac.patchServices }}
- apiGroups: [""]
  resources: ["services"]
  verbs: ["patch"]
# The affinity change is recorded as an Event on the Service (core/v1 events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}
{{- if .Values.rbac.exec }}
# A websocket exec is a GET (verb `get`), which newer apiservers also check as `create`; SPDY exec is a
# POST (`create`).
- apiGroups: [""]
  resources: ["pods/exec"]
  verbs: ["get", "create"]
{{- end }}
{{- end }}

{{/*
Rules in the release namespace for short-lived probe pods: create them, follow them, read their output,
delete them (also the leftovers of a dashboard that was killed mid-run).
*/}}
{{- define "svcscope.probePodRules" -}}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["create", "delete", "get", "list", "watch"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
{{- end }}

{{/*
Name of the Secret that holds the CSRF key.
*/}}
{{- define "svcscope.csrfSecretName" -}}
{{- .Values.csrf.existingSecret | default (printf "%s-csrf" (include "svcscope.fullname" .) | trunc 63 | trimSuffix "-") }}
{{- end }}

{{/*
Checks across values that the schema cannot express; each fails the render with the fix in its message.
*/}}
{{- define "svcscope.validate" -}}
{{- $system := list "kube-system" "kube-public" "kube-node-lease" }}
{{- range $ns := .Values.rbac.writableNamespaces }}
{{- if has $ns $system }}
{{- fail (printf "rbac.writableNamespaces lists %s: svcscope never writes in the cluster's own namespaces (%s). Remove it from the list." $ns (join ", " $system)) }}
{{- end }}
{{- if and $.Values.rbac.namespaces (not (has $ns $.Values.rbac.namespaces)) }}
{{- fail (printf "rbac.writableNamespaces lists %s, which is not watched (rbac.namespaces: %s): the dashboard would not see what it writes to. Add it to rbac.namespaces or remove it." $ns (join ", " $.Values.rbac.namespaces)) }}
{{- end }}
{{- end }}
{{- if and .Values.rbac.probePods (has .Release.Namespace $system) }}
{{- fail (printf "rbac.probePods creates probe pods in the release namespace, %s, one of the cluster's own namespaces: install svcscope into a namespace of its own." .Release.Namespace) }}
{{- end }}
{{- if and .Values.rbac.nodeOrigin (not .Values.rbac.probePods) }}
{{- fail "rbac.nodeOrigin runs hostNetwork probe pods, which are probe pods: set rbac.probePods=true too." }}
{{- end }}
{{- $grace := int .Values.server.gracefulShutdownSeconds }}
{{- if lt (int .Values.terminationGracePeriodSeconds) (add $grace 5) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least server.gracefulShutdownSeconds + 5 (%d)" (int .Values.terminationGracePeriodSeconds) (add $grace 5)) }}
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
