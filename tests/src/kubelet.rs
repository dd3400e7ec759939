//! `Kubelet`: runs the pods of a rendered StatefulSet as Docker containers, as a kubelet would
//! run them, so the chart's own manifests are what the container tests exercise.
//!
//! What it honours, from the rendered objects (JSON, from `ChartTools::render`):
//! - pod identity: container name per pod, hostname = pod name, and the pod's DNS name
//!   `<pod>.<serviceName>.<namespace>.svc.<domain>` as a network alias; every Service whose
//!   selector matches the pod adds `<service>.<namespace>.svc.<domain>` (Docker's DNS answers
//!   with every container holding an alias, as a Service's name resolves to its pods);
//! - the container's image, command and args, with `$(VAR)` expanded from its env as the
//!   kubelet does; env values, and the downward API's `metadata.name` and `metadata.namespace`;
//! - a Docker volume per claim of `volumeClaimTemplates` (named like the PVC,
//!   `<claim>-<pod>`), kept across restarts and deleted only when asked (scale-down); an
//!   `emptyDir` as a volume that lives as long as the container;
//! - the security context: user and group, read-only root filesystem, dropped capabilities,
//!   no privilege escalation;
//! - probes: the startup and readiness probes' HTTP GETs, polled at their rendered period and
//!   failure threshold;
//! - termination: SIGTERM, then SIGKILL after `terminationGracePeriodSeconds`.
//!
//! Hook and test pods (a Job's template, a `helm test` Pod) run once to completion.
//! Everything started is removed on drop: containers, volumes, the network.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Longest a `docker` command (other than a pod run to completion) may take.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// One rendered StatefulSet, run as containers on a network of its own.
pub struct Kubelet {
    network: String,
    /// Prefix of every container and volume name, unique per `Kubelet`.
    prefix: String,
    namespace: String,
    cluster_domain: String,
    statefulset: Value,
    services: Vec<Value>,
    containers: Mutex<Vec<String>>,
    volumes: Mutex<Vec<String>>,
}

/// A probe as rendered: an HTTP GET on a port.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    pub path: String,
    pub port: u16,
    pub period: Duration,
    pub failure_threshold: u32,
}

impl Kubelet {
    /// A network for the pods of `statefulset`; `services` are the rendered Services whose
    /// names the pods answer to.
    pub fn new(
        statefulset: &Value,
        services: Vec<Value>,
        namespace: &str,
        cluster_domain: &str,
    ) -> Result<Kubelet, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let prefix = format!(
            "coord-kubelet-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        docker(&["network", "create", &prefix])?;
        Ok(Kubelet {
            network: prefix.clone(),
            prefix,
            namespace: namespace.to_owned(),
            cluster_domain: cluster_domain.to_owned(),
            statefulset: statefulset.clone(),
            services,
            containers: Mutex::new(Vec::new()),
            volumes: Mutex::new(Vec::new()),
        })
    }

    /// The StatefulSet's name.
    pub fn name(&self) -> &str {
        self.statefulset["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
    }

    /// The pod name of `ordinal`.
    pub fn pod_name(&self, ordinal: usize) -> String {
        format!("{}-{ordinal}", self.name())
    }

    /// The pod's DNS name, as its peers reach it.
    pub fn pod_dns_name(&self, ordinal: usize) -> String {
        format!(
            "{}.{}.{}.svc.{}",
            self.pod_name(ordinal),
            self.statefulset["spec"]["serviceName"]
                .as_str()
                .unwrap_or_default(),
            self.namespace,
            self.cluster_domain
        )
    }

    fn container_name(&self, pod: &str) -> String {
        format!("{}-{pod}", self.prefix)
    }

    fn pod_spec(&self) -> &Value {
        &self.statefulset["spec"]["template"]["spec"]
    }

    fn main_container(&self) -> &Value {
        &self.pod_spec()["containers"][0]
    }

    /// Starts the pod of `ordinal` (its volumes are created on first start and kept).
    pub fn start_pod(&self, ordinal: usize) -> Result<(), String> {
        let pod = self.pod_name(ordinal);
        let name = self.container_name(&pod);
        let mut arguments: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            name.clone(),
            "--hostname".into(),
            pod.clone(),
            "--network".into(),
            self.network.clone(),
            "--network-alias".into(),
            self.pod_dns_name(ordinal),
        ];
        for service in self.services_of_pod() {
            arguments.push("--network-alias".into());
            arguments.push(service);
        }
        arguments.extend(self.volume_arguments(&pod)?);
        let container = self.main_container();
        arguments.extend(run_arguments(
            self.pod_spec(),
            container,
            &pod,
            &self.namespace,
        )?);
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        docker(&arguments)?;
        self.containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(name);
        Ok(())
    }

    /// `--network-alias` names of every rendered Service whose selector matches the pods.
    fn services_of_pod(&self) -> Vec<String> {
        let labels = &self.statefulset["spec"]["template"]["metadata"]["labels"];
        self.services
            .iter()
            .filter(|service| {
                service["spec"]["selector"]
                    .as_object()
                    .is_some_and(|selector| {
                        selector
                            .iter()
                            .all(|(key, value)| labels.get(key) == Some(value))
                    })
            })
            .map(|service| {
                format!(
                    "{}.{}.svc.{}",
                    service["metadata"]["name"].as_str().unwrap_or_default(),
                    self.namespace,
                    self.cluster_domain
                )
            })
            .collect()
    }

    /// `--mount` arguments for the container's volume mounts: a named volume per claim, an
    /// anonymous one per `emptyDir`.
    fn volume_arguments(&self, pod: &str) -> Result<Vec<String>, String> {
        let claims: Vec<&str> = self.statefulset["spec"]["volumeClaimTemplates"]
            .as_array()
            .map(|claims| {
                claims
                    .iter()
                    .filter_map(|claim| claim["metadata"]["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let volumes = self.pod_spec()["volumes"].as_array().cloned();
        let mut arguments = Vec::new();
        let mounts = self.main_container()["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for mount in mounts {
            let volume = mount["name"].as_str().unwrap_or_default();
            let path = mount["mountPath"].as_str().unwrap_or_default();
            let read_only = if mount["readOnly"].as_bool() == Some(true) {
                ",readonly"
            } else {
                ""
            };
            if claims.contains(&volume) {
                let docker_volume = format!("{}-{volume}-{pod}", self.prefix);
                self.remember_volume(&docker_volume);
                arguments.push("--mount".into());
                arguments.push(format!(
                    "type=volume,src={docker_volume},dst={path}{read_only}"
                ));
                continue;
            }
            let source = volumes
                .iter()
                .flatten()
                .find(|candidate| candidate["name"].as_str() == Some(volume))
                .ok_or_else(|| format!("volume mount {volume:?} has no volume"))?;
            if source.get("emptyDir").is_some() {
                arguments.push("--mount".into());
                arguments.push(format!("type=volume,dst={path}"));
            } else {
                return Err(format!(
                    "volume {volume:?} is neither a claim nor an emptyDir; this kubelet runs \
                     neither secrets nor config maps"
                ));
            }
        }
        Ok(arguments)
    }

    fn remember_volume(&self, volume: &str) {
        let mut volumes = self
            .volumes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !volumes.iter().any(|known| known == volume) {
            volumes.push(volume.to_owned());
        }
    }

    /// The container's IP on the pods' network.
    pub fn pod_ip(&self, ordinal: usize) -> Result<String, String> {
        let name = self.container_name(&self.pod_name(ordinal));
        let format = format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            self.network
        );
        let output = docker(&["inspect", "-f", &format, &name])?;
        let ip = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if ip.is_empty() {
            return Err(format!("{name} has no IP (not running?)"));
        }
        Ok(ip)
    }

    /// The container port of a named port of the main container (or a number as it is).
    fn port(&self, port: &Value) -> Option<u16> {
        if let Some(number) = port.as_u64() {
            return u16::try_from(number).ok();
        }
        let name = port.as_str()?;
        self.main_container()["ports"]
            .as_array()?
            .iter()
            .find(|candidate| candidate["name"].as_str() == Some(name))
            .and_then(|candidate| candidate["containerPort"].as_u64())
            .and_then(|number| u16::try_from(number).ok())
    }

    /// The main container's port named `name`.
    pub fn named_port(&self, name: &str) -> Option<u16> {
        self.port(&Value::String(name.to_owned()))
    }

    /// A rendered probe (`startupProbe`, `readinessProbe`, `livenessProbe`).
    pub fn probe(&self, kind: &str) -> Option<HttpProbe> {
        let probe = &self.main_container()[kind];
        let get = probe.get("httpGet")?;
        Some(HttpProbe {
            path: get["path"].as_str().unwrap_or("/").to_owned(),
            port: self.port(&get["port"])?,
            period: Duration::from_secs(probe["periodSeconds"].as_u64().unwrap_or(10)),
            failure_threshold: u32::try_from(probe["failureThreshold"].as_u64().unwrap_or(3))
                .unwrap_or(3),
        })
    }

    /// One HTTP GET of `probe` on the pod: its status code.
    pub fn probe_once(&self, ordinal: usize, probe: &HttpProbe) -> Result<u16, String> {
        let ip = self.pod_ip(ordinal)?;
        http_status(&format!("{ip}:{}", probe.port), &probe.path)
    }

    /// Polls `kind` at its rendered period until it answers 200, or fails as the kubelet would
    /// decide: `failureThreshold` failures in a row (the startup probe), or `limit` passing.
    pub fn wait_probe(&self, ordinal: usize, kind: &str, limit: Duration) -> Result<(), String> {
        let probe = self
            .probe(kind)
            .ok_or_else(|| format!("the pods have no HTTP {kind}"))?;
        let started = Instant::now();
        let mut failures = 0;
        loop {
            let last = match self.probe_once(ordinal, &probe) {
                Ok(200) => return Ok(()),
                Ok(status) => format!("HTTP {status}"),
                Err(error) => error,
            };
            failures += 1;
            if kind == "startupProbe" && failures >= probe.failure_threshold {
                return Err(format!(
                    "{kind} of {} failed {failures} times ({last}): the kubelet would restart it",
                    self.pod_name(ordinal)
                ));
            }
            if started.elapsed() >= limit {
                return Err(format!(
                    "{kind} of {} not passing after {limit:?}: {last}",
                    self.pod_name(ordinal)
                ));
            }
            // Poll faster than the rendered period (bounded by it), to measure gaps finely.
            std::thread::sleep(probe.period.min(Duration::from_millis(250)));
        }
    }

    /// Stops the pod as the kubelet does: SIGTERM, SIGKILL after the grace period.
    pub fn stop_pod(&self, ordinal: usize) -> Result<(), String> {
        let grace = self.pod_spec()["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30)
            .to_string();
        let name = self.container_name(&self.pod_name(ordinal));
        docker(&["stop", "-t", &grace, &name]).map(|_| ())
    }

    /// SIGKILL, as a crash or an OOM kill.
    pub fn kill_pod(&self, ordinal: usize) -> Result<(), String> {
        let name = self.container_name(&self.pod_name(ordinal));
        docker(&["kill", "-s", "KILL", &name]).map(|_| ())
    }

    /// Starts a stopped pod's container again, with the same volumes (a kubelet restart).
    pub fn restart_pod(&self, ordinal: usize) -> Result<(), String> {
        let name = self.container_name(&self.pod_name(ordinal));
        docker(&["start", &name]).map(|_| ())
    }

    /// Deletes the pod (after stopping it gracefully) and, when `delete_claims`, its volumes,
    /// as a StatefulSet scaled down with `whenScaled: Delete` does.
    pub fn delete_pod(&self, ordinal: usize, delete_claims: bool) -> Result<(), String> {
        let pod = self.pod_name(ordinal);
        let name = self.container_name(&pod);
        self.stop_pod(ordinal)?;
        docker(&["rm", "-f", "-v", &name])?;
        if delete_claims {
            let suffix = format!("-{pod}");
            let volumes: Vec<String> = self
                .volumes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .filter(|volume| volume.ends_with(&suffix))
                .cloned()
                .collect();
            for volume in volumes {
                docker(&["volume", "rm", &volume])?;
            }
        }
        Ok(())
    }

    /// Moves the pod as a rescheduling does: the old container goes (gracefully), a placeholder
    /// takes its IP on the network, and a new container for the same pod starts on the same
    /// volumes with another IP. Returns the old and the new IP.
    pub fn reschedule_pod(&self, ordinal: usize) -> Result<(String, String), String> {
        let old_ip = self.pod_ip(ordinal)?;
        let name = self.container_name(&self.pod_name(ordinal));
        self.stop_pod(ordinal)?;
        // `-v` drops only the container's anonymous volumes (emptyDirs); claims are named.
        docker(&["rm", "-f", "-v", &name])?;
        let placeholder = format!("{}-placeholder-{ordinal}", self.prefix);
        let image = self.main_container()["image"]
            .as_str()
            .ok_or("the container has no image")?
            .to_owned();
        // A lone member with no name on the network: it only holds the freed address.
        docker(&[
            "run",
            "-d",
            "--name",
            &placeholder,
            "--network",
            &self.network,
            &image,
        ])?;
        self.containers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(placeholder);
        self.start_pod(ordinal)?;
        let new_ip = self.pod_ip(ordinal)?;
        Ok((old_ip, new_ip))
    }

    /// The main container's logs so far (stdout and stderr).
    pub fn logs(&self, ordinal: usize) -> String {
        container_logs(&self.container_name(&self.pod_name(ordinal)))
    }

    /// Runs a one-off pod to completion: a Job's pod template or a Pod (a hook or a `helm
    /// test`). Returns its exit code and logs.
    pub fn run_to_completion(
        &self,
        object: &Value,
        limit: Duration,
    ) -> Result<(i64, String), String> {
        let (name, spec) = match object["kind"].as_str() {
            Some("Job") => (
                object["metadata"]["name"].as_str().unwrap_or("job"),
                &object["spec"]["template"]["spec"],
            ),
            Some("Pod") => (
                object["metadata"]["name"].as_str().unwrap_or("pod"),
                &object["spec"],
            ),
            other => return Err(format!("cannot run a {other:?} to completion")),
        };
        let container = &spec["containers"][0];
        let container_name = format!("{}-run-{name}", self.prefix);
        let _ = docker(&["rm", "-f", &container_name]);
        let mut arguments: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            container_name.clone(),
            "--network".into(),
            self.network.clone(),
        ];
        arguments.extend(run_arguments(spec, container, name, &self.namespace)?);
        let arguments: Vec<&str> = arguments.iter().map(String::as_str).collect();
        docker(&arguments)?;
        let finished = wait_exit(&container_name, limit);
        let logs = container_logs(&container_name);
        let _ = docker(&["rm", "-f", "-v", &container_name]);
        finished.map(|code| (code, logs))
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        let containers = std::mem::take(
            self.containers
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for container in containers {
            let _ = docker(&["rm", "-f", "-v", &container]);
        }
        let volumes = std::mem::take(
            self.volumes
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for volume in volumes {
            let _ = docker(&["volume", "rm", "-f", &volume]);
        }
        let _ = docker(&["network", "rm", &self.network]);
    }
}

/// A container's stdout and stderr so far (or why they could not be read).
fn container_logs(container: &str) -> String {
    docker(&["logs", container])
        .map(|output| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        })
        .unwrap_or_else(|error| error)
}

/// The `docker run` arguments a pod's container gets whatever it is: its security context,
/// its env (resolved for `pod`), and its entrypoint, image and arguments.
fn run_arguments(
    pod_spec: &Value,
    container: &Value,
    pod: &str,
    namespace: &str,
) -> Result<Vec<String>, String> {
    let mut arguments = security_arguments(pod_spec, container);
    let env = resolve_env(container, pod, namespace)?;
    for (key, value) in &env {
        arguments.push("--env".into());
        arguments.push(format!("{key}={value}"));
    }
    arguments.extend(command_arguments(container, &env)?);
    Ok(arguments)
}

/// Waits until `container` exits; its exit code.
fn wait_exit(container: &str, limit: Duration) -> Result<i64, String> {
    let started = Instant::now();
    loop {
        let output = docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.ExitCode}}",
            container,
        ])?;
        let state = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if let Some(code) = state.strip_prefix("false ") {
            return code
                .parse()
                .map_err(|_| format!("{container}: exit code {code:?}"));
        }
        if started.elapsed() >= limit {
            return Err(format!("{container} still running after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `--user`, `--read-only`, `--cap-drop`, `--security-opt` from a pod's and its container's
/// security contexts.
fn security_arguments(pod_spec: &Value, container: &Value) -> Vec<String> {
    let pod = &pod_spec["securityContext"];
    let own = &container["securityContext"];
    let pick = |key: &str| {
        own.get(key)
            .or_else(|| pod.get(key))
            .and_then(Value::as_u64)
    };
    let mut arguments = Vec::new();
    if let Some(user) = pick("runAsUser") {
        let group = pick("runAsGroup").unwrap_or(user);
        arguments.push("--user".into());
        arguments.push(format!("{user}:{group}"));
    }
    if own["readOnlyRootFilesystem"].as_bool() == Some(true) {
        arguments.push("--read-only".into());
    }
    if let Some(dropped) = own["capabilities"]["drop"].as_array() {
        for capability in dropped.iter().filter_map(Value::as_str) {
            arguments.push("--cap-drop".into());
            arguments.push(capability.to_owned());
        }
    }
    if own["allowPrivilegeEscalation"].as_bool() == Some(false) {
        arguments.push("--security-opt".into());
        arguments.push("no-new-privileges".into());
    }
    arguments
}

/// The container's env as the kubelet gives it: plain values, and the downward API's pod name
/// and namespace. A secret it cannot read is an error unless optional.
pub fn resolve_env(
    container: &Value,
    pod: &str,
    namespace: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = Vec::new();
    for variable in container["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().unwrap_or_default().to_owned();
        if let Some(value) = variable["value"].as_str() {
            let value = expand(value, &env);
            env.push((name, value));
            continue;
        }
        let from = &variable["valueFrom"];
        match from["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => env.push((name, pod.to_owned())),
            Some("metadata.namespace") => env.push((name, namespace.to_owned())),
            Some(other) => return Err(format!("env {name}: field {other} is not supported")),
            None if from["secretKeyRef"]["optional"].as_bool() == Some(true) => {}
            None => return Err(format!("env {name}: {from} is not supported")),
        }
    }
    Ok(env)
}

/// `--entrypoint` and the arguments: `command` replaces the image's entrypoint, `args` follow,
/// each with `$(VAR)` expanded.
fn command_arguments(container: &Value, env: &[(String, String)]) -> Result<Vec<String>, String> {
    let strings = |key: &str| -> Vec<String> {
        container[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|item| expand(item, env))
            .collect()
    };
    let image = container["image"]
        .as_str()
        .ok_or("the container has no image")?
        .to_owned();
    let command = strings("command");
    let mut arguments = Vec::new();
    let mut rest = Vec::new();
    if let Some((entrypoint, first_arguments)) = command.split_first() {
        arguments.push("--entrypoint".into());
        arguments.push(entrypoint.clone());
        rest.extend(first_arguments.iter().cloned());
    }
    arguments.push(image);
    arguments.extend(rest);
    arguments.extend(strings("args"));
    Ok(arguments)
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, `$$` is a literal `$`, an
/// undefined one is left as it is.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        let replaced = after.strip_prefix('(').and_then(|inner| {
            let end = inner.find(')')?;
            let name = &inner[..end];
            let value = env.iter().rev().find(|(key, _)| key == name)?;
            Some((value.1.clone(), &inner[end + 1..]))
        });
        match replaced {
            Some((value, remainder)) => {
                out.push_str(&value);
                rest = remainder;
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The status code of `GET path` at `address` (HTTP/1.0, one-second bounds).
pub fn http_status(address: &str, path: &str) -> Result<u16, String> {
    let response = http_get(address, path)?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("{address}{path}: no status line in {response:?}"))
}

/// The whole response (status line, headers, body) to `GET path` at `address`.
pub fn http_get(address: &str, path: &str) -> Result<String, String> {
    let address: SocketAddr = address
        .parse()
        .map_err(|error| format!("{address}: {error}"))?;
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .map_err(|error| format!("{address}: {error}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|error| format!("{address}: {error}"))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")
        .map_err(|error| format!("{address}: {error}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|error| format!("{address}: {error}"))?;
    Ok(response)
}

/// Runs `docker ARGS`, bounded by `DOCKER_TIMEOUT`; the output, or stderr as the error.
pub fn docker(arguments: &[&str]) -> Result<Output, String> {
    let mut child = Command::new("docker")
        .args(arguments)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|error| format!("docker {}: {error}", arguments.join(" ")))?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() < DOCKER_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "docker {} did not finish within {DOCKER_TIMEOUT:?}",
                    arguments.join(" ")
                ));
            }
        }
    }
    let output = child
        .wait_with_output()
        .map_err(|error| format!("docker {}: {error}", arguments.join(" ")))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(format!(
            "docker {} failed: {}",
            arguments.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_the_kubelet() {
        let env = vec![
            ("POD_NAME".to_owned(), "coord-2".to_owned()),
            ("NS".to_owned(), "prod".to_owned()),
        ];
        assert_eq!(
            expand("--id-from-ordinal=$(POD_NAME)", &env),
            "--id-from-ordinal=coord-2"
        );
        assert_eq!(
            expand("$(POD_NAME).h.$(NS).svc", &env),
            "coord-2.h.prod.svc"
        );
        assert_eq!(
            expand("$$(POD_NAME) $(MISSING) $", &env),
            "$(POD_NAME) $(MISSING) $"
        );
    }

    #[test]
    fn env_takes_the_downward_api_and_refuses_what_it_cannot_give() {
        let container = serde_json::json!({"env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "ADDRESS", "value": "$(POD_NAME):7400"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t", "optional": true}}},
        ]});
        let env = resolve_env(&container, "coord-1", "ns").unwrap();
        assert_eq!(
            env,
            [
                ("POD_NAME".to_owned(), "coord-1".to_owned()),
                ("ADDRESS".to_owned(), "coord-1:7400".to_owned())
            ]
        );
        let secret = serde_json::json!({"env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "t"}}},
        ]});
        assert!(resolve_env(&secret, "coord-1", "ns").is_err());
    }
}
