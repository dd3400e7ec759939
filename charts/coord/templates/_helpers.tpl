{{/*
Names, labels and addresses shared by the templates.
*/}}

{{/*
The chart name, or nameOverride.
*/}}
{{- define "coord.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The prefix of every resource name, and the cluster name.
Cut to 52 characters: the StatefulSet's pods carry a controller-revision-hash label of
`<name>-<10 characters>`, and `<name>-headless` must stay a 63-character DNS label.
*/}}
{{- define "coord.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "coord.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Labels of every resource. Call with (dict "context" $ "component" "server").
*/}}
{{- define "coord.labels" -}}
{{- $context := .context -}}
helm.sh/chart: {{ include "coord.chart" $context }}
app.kubernetes.io/name: {{ include "coord.name" $context }}
app.kubernetes.io/instance: {{ $context.Release.Name }}
app.kubernetes.io/version: {{ include "coord.imageTag" $context | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: coord
app.kubernetes.io/managed-by: {{ $context.Release.Service }}
{{- with $context.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Labels that select this release's member pods. The component is part of them so that the
Services, the PodDisruptionBudget and the StatefulSet never pick up the hook or test pods.
Never change them: a StatefulSet's selector is immutable.
*/}}
{{- define "coord.selectorLabels" -}}
app.kubernetes.io/name: {{ include "coord.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: server
{{- end -}}

{{/*
Labels shared by every pod of the release (members, hook, test): the NetworkPolicy admits
them all to the client port.
*/}}
{{- define "coord.releasePodLabels" -}}
app.kubernetes.io/name: {{ include "coord.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "coord.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{- define "coord.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "coord.imageTag" .) -}}
{{- end -}}

{{- define "coord.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "coord.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "coord.headlessName" -}}
{{- printf "%s-headless" (include "coord.fullname" .) -}}
{{- end -}}

{{/*
The headless Service's DNS name; each member is `<pod>.` this.
*/}}
{{- define "coord.peerDomain" -}}
{{- printf "%s.%s.svc.%s" (include "coord.headlessName" .) .Release.Namespace .Values.clusterDomain -}}
{{- end -}}

{{/*
The client Service's address, for the chart's own coordctl runs.
*/}}
{{- define "coord.clientEndpoint" -}}
{{- printf "%s.%s.svc.%s:%d" (include "coord.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.ports.client) -}}
{{- end -}}

{{/*
terminationGracePeriodSeconds: the value when set, else the server's shutdown timeout plus a
margin for the process to be reaped.
*/}}
{{- define "coord.terminationGracePeriodSeconds" -}}
{{- if kindIs "string" .Values.terminationGracePeriodSeconds -}}
{{- add (int .Values.server.shutdownTimeout) 5 -}}
{{- else -}}
{{- int .Values.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/*
Settings that no schema can express; each failure names the values to change.
*/}}
{{- define "coord.validate" -}}
{{- if and .Values.tls.client.enabled (not .Values.tls.client.existingSecret) -}}
{{- fail "tls.client.enabled needs tls.client.existingSecret (a Secret with tls.crt, tls.key and ca.crt)" -}}
{{- end -}}
{{- if and .Values.tls.client.enabled .Values.tls.client.clientCertAuth (not .Values.tls.client.clientSecret) -}}
{{- fail "tls.client.clientCertAuth needs tls.client.clientSecret: the scale-down hook and helm test must present a client certificate" -}}
{{- end -}}
{{- if and .Values.tls.client.clientCertAuth (not .Values.tls.client.enabled) -}}
{{- fail "tls.client.clientCertAuth needs tls.client.enabled" -}}
{{- end -}}
{{- if and .Values.tls.peer.enabled (not .Values.tls.peer.existingSecret) -}}
{{- fail "tls.peer.enabled needs tls.peer.existingSecret (a Secret with tls.crt, tls.key and ca.crt)" -}}
{{- end -}}
{{- if and .Values.tls.peer.allowedCN (not .Values.tls.peer.enabled) -}}
{{- fail "tls.peer.allowedCN needs tls.peer.enabled" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs metrics.enabled (the ServiceMonitor scrapes the metrics Service)" -}}
{{- end -}}
{{- $ports := list (int .Values.ports.client) (int .Values.ports.peer) (int .Values.ports.metrics) -}}
{{- if ne (len (uniq $ports)) 3 -}}
{{- fail "ports.client, ports.peer and ports.metrics must differ" -}}
{{- end -}}
{{- end -}}

{{/*
Environment of the chart's own coordctl runs (scale-down hook, helm test). Environment, not
flags, so that the coordctl processes that `coordctl lock -- ...` starts inherit it.
*/}}
{{- define "coord.coordctlEnv" -}}
- name: COORD_ENDPOINTS
  value: {{ include "coord.clientEndpoint" . | quote }}
{{- if .Values.tls.client.enabled }}
- name: COORD_CACERT
  value: /etc/coord/tls/client/ca.crt
{{- if .Values.tls.client.clientCertAuth }}
- name: COORD_CERT
  value: /etc/coord/tls/coordctl/tls.crt
- name: COORD_KEY
  value: /etc/coord/tls/coordctl/tls.key
{{- end }}
{{- end }}
{{- if .Values.auth.existingSecret }}
- name: COORD_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.auth.existingSecret }}
      key: {{ .Values.auth.tokenKey }}
{{- end }}
{{- end -}}

{{/*
Volumes of the chart's own coordctl runs: the client CA (only ca.crt of the members' secret,
never their key) and, with client certificate auth, coordctl's own certificate.
*/}}
{{- define "coord.coordctlVolumes" -}}
{{- if .Values.tls.client.enabled }}
- name: client-ca
  secret:
    secretName: {{ .Values.tls.client.existingSecret }}
    defaultMode: 0440
    items:
      - key: ca.crt
        path: ca.crt
{{- if .Values.tls.client.clientCertAuth }}
- name: coordctl-tls
  secret:
    secretName: {{ .Values.tls.client.clientSecret }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}
{{- end -}}

{{- define "coord.coordctlVolumeMounts" -}}
{{- if .Values.tls.client.enabled }}
- name: client-ca
  mountPath: /etc/coord/tls/client
  readOnly: true
{{- if .Values.tls.client.clientCertAuth }}
- name: coordctl-tls
  mountPath: /etc/coord/tls/coordctl
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{/*
Pod security settings of the chart's own coordctl pods: the same as the members'.
*/}}
{{- define "coord.coordctlPodSettings" -}}
automountServiceAccountToken: false
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
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
{{- end -}}

{{/*
A probe's timing fields, from its block in values (without `enabled`).
*/}}
{{- define "coord.probeTiming" -}}
initialDelaySeconds: {{ .initialDelaySeconds }}
periodSeconds: {{ .periodSeconds }}
timeoutSeconds: {{ .timeoutSeconds }}
failureThreshold: {{ .failureThreshold }}
successThreshold: {{ .successThreshold }}
{{- end -}}

{{/*
Peer addresses of every member the chart can run (ordinals 0 to 8; the schema caps
replicaCount at 9), for --join-via. Fixed, so that scaling never changes the pod template.
*/}}
{{- define "coord.joinVia" -}}
{{- $fullname := include "coord.fullname" . -}}
{{- $peerDomain := include "coord.peerDomain" . -}}
{{- $addresses := list -}}
{{- range $ordinal := until 9 -}}
{{- $addresses = append $addresses (printf "%s-%d.%s:%v" $fullname $ordinal $peerDomain $.Values.ports.peer) -}}
{{- end -}}
{{- join "," $addresses -}}
{{- end -}}
