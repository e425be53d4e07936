//! The two ways to build images agree: `hack/mkimage.py` (no Docker; what the node tests and
//! `make images` use) sets the same user, entrypoint, command and ports as the Dockerfiles, and
//! its OCI tarball holds what a dynamically linked binary needs to start.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// USER, ENTRYPOINT, CMD and EXPOSE of the final stage of a Dockerfile.
fn dockerfile(path: &str) -> (String, Vec<String>, Vec<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(root().join(path)).expect("read Dockerfile");
    let last_stage = text.rsplit("\nFROM ").next().expect("a FROM line");
    let (mut user, mut entrypoint, mut cmd, mut ports) =
        (String::new(), Vec::new(), Vec::new(), BTreeSet::new());
    for line in last_stage.lines() {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        match word {
            "USER" => user = rest.trim().to_string(),
            "ENTRYPOINT" => entrypoint = serde_json::from_str(rest).expect("exec-form ENTRYPOINT"),
            "CMD" => cmd = serde_json::from_str(rest).expect("exec-form CMD"),
            "EXPOSE" => ports.extend(rest.split_whitespace().map(|p| format!("{p}/tcp"))),
            _ => {}
        }
    }
    (user, entrypoint, cmd, ports)
}

fn mkimage(args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(root().join("hack/mkimage.py"))
        .args(args)
        .output()
        .expect("run hack/mkimage.py");
    assert!(
        out.status.success(),
        "mkimage.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn mkimage_agrees_with_the_dockerfiles() {
    for (image, file) in [
        ("tracking-operator", "Dockerfile"),
        ("tracking-worker", "worker/Dockerfile"),
    ] {
        let (user, entrypoint, cmd, ports) = dockerfile(file);
        let config: Value =
            serde_json::from_str(&mkimage(&[image, "-", "-", "--print-config"])).expect("json");
        let c = &config["config"];
        assert_eq!(c["User"], user.as_str(), "{image}: user");
        assert_eq!(strings(&c["Entrypoint"]), entrypoint, "{image}: entrypoint");
        assert_eq!(strings(&c["Cmd"]), cmd, "{image}: cmd");
        let exposed: BTreeSet<String> = c["ExposedPorts"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(exposed, ports, "{image}: ports");
    }
}

#[test]
fn an_image_holds_the_binary_its_libraries_and_ca_certificates() {
    let dir = tempfile_dir();
    let out = dir.join("image.tar");
    // Any dynamically linked binary will do; /bin/true needs libc and the loader.
    mkimage(&[
        "tracking-worker",
        "/bin/true",
        out.to_str().expect("path"),
        "--ref",
        "localhost/check:1",
    ]);
    let listing = Command::new("tar")
        .arg("-xf")
        .arg(&out)
        .arg("-C")
        .arg(&dir)
        .output()
        .expect("tar");
    assert!(listing.status.success());
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).expect("index"))
            .expect("index json");
    let manifest_ref = &index["manifests"][0];
    assert_eq!(
        manifest_ref["annotations"]["io.containerd.image.name"],
        "localhost/check:1"
    );
    let blob = |digest: &Value| {
        let d = digest
            .as_str()
            .expect("digest")
            .trim_start_matches("sha256:");
        dir.join("blobs/sha256").join(d)
    };
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest_ref["digest"])).expect("manifest"))
            .expect("manifest json");
    let layer = blob(&manifest["layers"][0]["digest"]);
    let files = Command::new("tar")
        .arg("-tf")
        .arg(&layer)
        .output()
        .expect("list layer");
    let files = String::from_utf8_lossy(&files.stdout).to_string();
    for needed in [
        "usr/local/bin/tracking-worker",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "tmp/",
    ] {
        assert!(
            files.lines().any(|l| l == needed),
            "{needed} missing: {files}"
        );
    }
    assert!(
        files.lines().any(|l| l.contains("libc.so")),
        "the C library is in the layer: {files}"
    );
    assert!(
        files.lines().any(|l| l.contains("ld-linux")),
        "the dynamic loader is in the layer: {files}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("images-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
