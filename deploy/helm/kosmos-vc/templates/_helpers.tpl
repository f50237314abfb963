{{- define "kosmos-vc.name" -}}{{ .Release.Name }}{{- end -}}

{{/* Cluster-scoped objects: named after the release's namespace too, so two releases never collide. */}}
{{- define "kosmos-vc.clusterName" -}}kosmos-vc:{{ .Release.Namespace }}:{{ .Release.Name }}{{- end -}}

{{- define "kosmos-vc.labels" -}}
app.kubernetes.io/name: kosmos-vc
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "kosmos-vc.selector" -}}
app.kubernetes.io/name: kosmos-vc
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "kosmos-vc.image" -}}
{{ .Values.image.repository }}:{{ required "image.tag is required (npm run image prints it)" .Values.image.tag }}
{{- end -}}

{{/* KOSMOS_VC_IMAGES: component=image,... with clusterTree's defaulting to the operator's. */}}
{{- define "kosmos-vc.images" -}}
{{- $images := list -}}
{{- range $component, $image := .Values.images -}}
{{- $name := $image -}}
{{- if and (eq $component "clustertree") (not $image) -}}{{- $name = include "kosmos-vc.image" $ -}}{{- end -}}
{{- if $name -}}{{- $images = append $images (printf "%s=%s" $component $name) -}}{{- end -}}
{{- end -}}
{{- join "," $images -}}
{{- end -}}
