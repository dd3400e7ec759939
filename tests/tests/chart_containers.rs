//! The chart run as Kubernetes would run it, without Kubernetes: the rendered StatefulSet's pods
//! as containers of the image `./dev image` builds (from this build's binaries), with the
//! rendered args, env, volumes and probes (`coord_tests::kubelet`). One test, in phases, so one
//! image and one cluster serve them all:
//!
//! 1. the pods form a 3-voter cluster on their own and pass their probes;
//! 2. the chart's `helm test` pod takes a lock and runs an election through the client Service;
//! 3. data survives a SIGKILL of a member and its restart;
//! 4. 3 → 5 → 3 the way the chart scales: new pods join as learners and promote themselves; the
//!    pre-upgrade hook Job retires members 5 and 4 before their pods and volumes go; a writer
//!    runs throughout and every acknowledged write is there at the end;
//! 5. a rolling restart (SIGTERM, in StatefulSet order: highest ordinal first, each once the
//!    previous one is ready again) under load, with the longest write gap printed.
//!
//! Skipped, with the reason printed, only where no Docker daemon answers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use coord_client::{Client, ClientOptions, CreateOptions};
use coord_tests::chart::{docker_available, find, ChartTools};
use coord_tests::kubelet::{docker, Kubelet};
use coord_tests::{binary, eventually};
use serde_json::Value;

const RELEASE: &str = "kt";
const NAMESPACE: &str = "coord";
/// How long a pod may take to start and become ready (debug binaries, two cores).
const READY_LIMIT: Duration = Duration::from_secs(90);

fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_owned()
}

/// An image built by `./dev image` from this build's binaries; removed on drop.
struct Image {
    repository: String,
    tag: String,
}

impl Image {
    fn build() -> Image {
        let repository = "coord-chart-test".to_owned();
        let tag = format!("pid{}", std::process::id());
        let binaries = binary("coord-server")
            .parent()
            .expect("binaries live in a directory")
            .to_owned();
        let output = std::process::Command::new(repository_root().join("dev"))
            .args(["image", "--binaries"])
            .arg(&binaries)
            .args(["--tag", &format!("{repository}:{tag}")])
            .output()
            .expect("./dev image runs");
        assert!(
            output.status.success(),
            "./dev image failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("{}", String::from_utf8_lossy(&output.stdout).trim());
        Image { repository, tag }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        for name in ["", "-base", "-binaries"] {
            let image = format!("{}{name}:{}", self.repository, self.tag);
            let _ = docker(&["rmi", "-f", &image]);
        }
    }
}

/// The chart rendered with this image and `replicas`.
fn render(tools: &ChartTools, image: &Image, replicas: usize) -> Vec<Value> {
    let replicas = replicas.to_string();
    let sets = [
        ("image.repository", image.repository.as_str()),
        ("image.tag", image.tag.as_str()),
        ("replicaCount", replicas.as_str()),
    ];
    tools
        .render(
            &repository_root().join("charts/coord"),
            RELEASE,
            NAMESPACE,
            &sets,
        )
        .expect("the chart renders")
}

fn object<'a>(manifests: &'a [Value], kind: &str, suffix: &str) -> &'a Value {
    find(manifests, kind, suffix).unwrap_or_else(|| panic!("no {kind} named *{suffix}"))
}

fn kubelet_for(manifests: &[Value]) -> Kubelet {
    let services = manifests
        .iter()
        .filter(|object| object["kind"] == "Service")
        .cloned()
        .collect();
    let statefulset = object(manifests, "StatefulSet", "coord");
    Kubelet::new(statefulset, services, NAMESPACE, "cluster.local").expect("a docker network")
}

/// A client of the given pods by IP (the host cannot resolve the pods' DNS names, so it does
/// not learn members from the cluster either).
async fn client_of(kubelet: &Kubelet, ordinals: &[usize]) -> Client {
    let port = kubelet.named_port("client").expect("a client port");
    let endpoints: Vec<String> = ordinals
        .iter()
        .filter_map(|ordinal| kubelet.pod_ip(*ordinal).ok())
        .map(|ip| format!("{ip}:{port}"))
        .collect();
    let options = ClientOptions {
        discover_members: false,
        ..ClientOptions::default()
    };
    Client::connect_with(endpoints, options)
        .await
        .expect("a client of the pods")
}

fn wait_ready(kubelet: &Kubelet, ordinal: usize) {
    kubelet
        .wait_probe(ordinal, "startupProbe", READY_LIMIT)
        .and_then(|()| kubelet.wait_probe(ordinal, "readinessProbe", READY_LIMIT))
        .unwrap_or_else(|error| panic!("{error}\n{}", kubelet.logs(ordinal)));
}

/// Waits until the membership is exactly `voters`, every one a voter.
async fn wait_voters(client: &Client, voters: &[u64]) {
    let what = format!("the membership is voters {voters:?}");
    eventually(&what, READY_LIMIT, || async {
        let members = client.member_list().await.ok()?;
        let mut ids: Vec<u64> = members.iter().map(|member| member.id).collect();
        ids.sort_unstable();
        (ids == voters && members.iter().all(|member| member.voter)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_runs_forms_scales_and_rolls_in_containers() {
    if let Some(reason) = docker_available() {
        eprintln!("skipped: no Docker daemon answers ({reason})");
        return;
    }
    let Some(tools) = ChartTools::for_test() else {
        return;
    };
    let image = Image::build();
    eprintln!("phase 0: the image run with no arguments serves a single member");
    single_member_without_arguments(&image);
    let three = render(&tools, &image, 3);
    let kubelet = kubelet_for(&three);

    eprintln!("phase 1: three pods form a cluster");
    for ordinal in 0..3 {
        kubelet.start_pod(ordinal).expect("the pod starts");
    }
    for ordinal in 0..3 {
        wait_ready(&kubelet, ordinal);
    }
    let client = client_of(&kubelet, &[0, 1, 2]).await;
    wait_voters(&client, &[1, 2, 3]).await;
    let metrics_port = kubelet.named_port("metrics").expect("a metrics port");
    let metrics = coord_tests::kubelet::http_get(
        &format!("{}:{metrics_port}", kubelet.pod_ip(0).unwrap()),
        "/metrics",
    )
    .expect("/metrics answers");
    assert!(metrics.contains("coord_server_has_leader 1"), "{metrics}");

    eprintln!("phase 2: the helm test pod");
    helm_test(&kubelet, &three);

    eprintln!("phase 3: data survives a SIGKILL and a restart");
    kill_and_restart(&kubelet, &client).await;

    eprintln!("phase 3b: a pod rescheduled with a new IP rejoins by its DNS name");
    reschedule(&kubelet).await;

    eprintln!("phase 4: 3 -> 5 -> 3 as the chart scales, under writes");
    scale_up_and_down(&tools, &image, &kubelet).await;

    eprintln!("phase 5: rolling restart under load");
    rolling_restart(&kubelet).await;
}

/// `docker run IMAGE` with no arguments: one member on every interface, ready once it leads,
/// with its metrics on port 7402.
fn single_member_without_arguments(image: &Image) {
    let name = format!("coord-chart-test-single-{}", std::process::id());
    let reference = format!("{}:{}", image.repository, image.tag);
    let _ = docker(&["rm", "-f", &name]);
    docker(&["run", "-d", "--name", &name, &reference]).expect("the image runs");
    let ip = String::from_utf8_lossy(
        &docker(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", &name])
            .expect("docker inspect")
            .stdout,
    )
    .trim()
    .to_owned();
    let started = Instant::now();
    let ready = loop {
        let status = coord_tests::kubelet::http_status(&format!("{ip}:7402"), "/readyz");
        if status == Ok(200) || started.elapsed() > READY_LIMIT {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let metrics = coord_tests::kubelet::http_get(&format!("{ip}:7402"), "/metrics");
    let logs = docker(&["logs", &name])
        .map(|output| String::from_utf8_lossy(&output.stderr).into_owned())
        .unwrap_or_default();
    let _ = docker(&["rm", "-f", "-v", &name]);
    assert_eq!(ready, Ok(200), "/readyz of the lone member:\n{logs}");
    let metrics = metrics.expect("/metrics answers");
    for name in [
        "coord_server_is_leader 1",
        "coord_raft_applied_index",
        "process_open_fds",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    eprintln!(
        "the image alone: ready after {} ms",
        started.elapsed().as_millis()
    );
}

/// Runs the chart's `helm test` pod against the client Service name.
fn helm_test(kubelet: &Kubelet, manifests: &[Value]) {
    let test_pod = manifests
        .iter()
        .find(|object| {
            object["kind"] == "Pod" && object["metadata"]["annotations"]["helm.sh/hook"] == "test"
        })
        .expect("a helm test pod");
    let (code, logs) = kubelet
        .run_to_completion(test_pod, Duration::from_secs(180))
        .expect("the helm test pod runs");
    assert_eq!(code, 0, "helm test failed:\n{logs}");
    assert!(
        logs.contains("leader"),
        "the test printed no cluster status:\n{logs}"
    );
}

/// Writes, SIGKILLs member 1 (ordinal 0, the founder), restarts it and reads everything back
/// through it alone.
async fn kill_and_restart(kubelet: &Kubelet, client: &Client) {
    let create = CreateOptions {
        make_parents: true,
        ..CreateOptions::default()
    };
    for key in 0..50 {
        client
            .create(&format!("/kube/kill/{key}"), format!("v{key}"), &create)
            .await
            .expect("a write before the kill");
    }
    kubelet.kill_pod(0).expect("SIGKILL");
    kubelet.restart_pod(0).expect("the kubelet restarts it");
    wait_ready(kubelet, 0);
    let alone = client_of(kubelet, &[0]).await;
    for key in 0..50 {
        let node = alone
            .get(&format!("/kube/kill/{key}"))
            .await
            .expect("the write survived");
        assert_eq!(node.data, format!("v{key}").into_bytes());
    }
}

/// Member 2 (ordinal 1) moves to another IP; the others reach it again through its DNS name
/// (resolved anew on reconnect), so it catches up and the cluster commits with it.
async fn reschedule(kubelet: &Kubelet) {
    let (old_ip, new_ip) = kubelet.reschedule_pod(1).expect("the pod moves");
    assert_ne!(old_ip, new_ip, "the rescheduled pod kept its IP");
    wait_ready(kubelet, 1);
    let client = client_of(kubelet, &[0, 1, 2]).await;
    let create = CreateOptions {
        make_parents: true,
        ..CreateOptions::default()
    };
    client
        .create("/kube/moved", "after", &create)
        .await
        .expect("a write after the move");
    let moved = client_of(kubelet, &[1]).await;
    eventually(
        "the moved member applies the new write",
        READY_LIMIT,
        || async {
            let node = moved
                .get_with("/kube/moved", coord_client::Consistency::Serializable)
                .await
                .ok()?;
            (node.data == b"after").then_some(())
        },
    )
    .await;
    wait_voters(&client, &[1, 2, 3]).await;
    eprintln!("rescheduled kt-coord-1: {old_ip} -> {new_ip}, caught up");
}

/// Writes one new node after another until stopped; the nodes acknowledged, and the longest
/// time between two acknowledgements.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Vec<String>, Duration)>,
}

impl Writer {
    fn start(client: Client, prefix: &str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let prefix = prefix.to_owned();
        let task = tokio::spawn(async move {
            let create = CreateOptions {
                make_parents: true,
                ..CreateOptions::default()
            };
            let mut acknowledged = Vec::new();
            let mut last = Instant::now();
            let mut longest = Duration::ZERO;
            let mut next = 0u64;
            while !stopping.load(Ordering::Relaxed) {
                let path = format!("{prefix}/{next:08}");
                next += 1;
                if client.create(&path, "w", &create).await.is_ok() {
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                    acknowledged.push(path);
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            (acknowledged, longest)
        });
        Writer { stop, task }
    }

    async fn finish(self) -> (Vec<String>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(60), self.task)
            .await
            .expect("the writer stops")
            .expect("the writer did not panic")
    }
}

/// Every acknowledged path can be read.
async fn assert_all_present(client: &Client, acknowledged: &[String]) {
    for path in acknowledged {
        client
            .get(path)
            .await
            .unwrap_or_else(|error| panic!("acknowledged {path} is gone: {error}"));
    }
}

async fn scale_up_and_down(tools: &ChartTools, image: &Image, kubelet: &Kubelet) {
    let five = render(tools, image, 5);
    let three = render(tools, image, 3);
    let template =
        |manifests: &[Value]| object(manifests, "StatefulSet", "coord")["spec"]["template"].clone();
    assert_eq!(
        template(&five),
        template(&three),
        "scaling must not change the pod template (it would restart every pod)"
    );
    let writer = Writer::start(client_of(kubelet, &[0, 1, 2]).await, "/kube/scale");
    for ordinal in 3..5 {
        kubelet.start_pod(ordinal).expect("a new pod starts");
    }
    for ordinal in 3..5 {
        wait_ready(kubelet, ordinal);
    }
    let client = client_of(kubelet, &[0, 1, 2]).await;
    wait_voters(&client, &[1, 2, 3, 4, 5]).await;
    let hook = object(&three, "Job", "scale-down");
    assert_eq!(
        hook["metadata"]["annotations"]["helm.sh/hook"], "pre-upgrade,pre-rollback",
        "the scale-down Job runs before Helm changes the StatefulSet"
    );
    let (code, logs) = kubelet
        .run_to_completion(hook, Duration::from_secs(240))
        .expect("the hook Job runs");
    assert_eq!(code, 0, "the scale-down hook failed:\n{logs}");
    wait_voters(&client, &[1, 2, 3]).await;
    for ordinal in [4, 3] {
        kubelet
            .delete_pod(ordinal, true)
            .expect("the pod and its claim go");
    }
    let (acknowledged, longest) = writer.finish().await;
    assert!(
        !acknowledged.is_empty(),
        "no write was acknowledged while scaling"
    );
    assert_all_present(&client, &acknowledged).await;
    wait_voters(&client, &[1, 2, 3]).await;
    eprintln!(
        "scale 3 -> 5 -> 3: {} writes acknowledged, all present; longest write gap {} ms",
        acknowledged.len(),
        longest.as_millis()
    );
}

async fn rolling_restart(kubelet: &Kubelet) {
    let writer = Writer::start(client_of(kubelet, &[0, 1, 2]).await, "/kube/roll");
    tokio::time::sleep(Duration::from_secs(1)).await;
    for ordinal in [2, 1, 0] {
        let stopped = Instant::now();
        kubelet.stop_pod(ordinal).expect("SIGTERM stops the pod");
        let stop_took = stopped.elapsed();
        kubelet.restart_pod(ordinal).expect("the pod starts again");
        wait_ready(kubelet, ordinal);
        eprintln!(
            "rolled {}: stopped in {} ms, ready again {} ms after SIGTERM",
            kubelet.pod_name(ordinal),
            stop_took.as_millis(),
            stopped.elapsed().as_millis()
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (acknowledged, longest) = writer.finish().await;
    let client = client_of(kubelet, &[0, 1, 2]).await;
    assert_all_present(&client, &acknowledged).await;
    wait_voters(&client, &[1, 2, 3]).await;
    eprintln!(
        "rolling restart of 3 members: {} writes acknowledged, all present; longest write gap \
         {} ms",
        acknowledged.len(),
        longest.as_millis()
    );
}
