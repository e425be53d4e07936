//! etcd + kube-apiserver (+ kube-controller-manager when built), on loopback, or on the node's
//! bridge address when Pods must reach the API server (see [`crate::node`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;

use crate::process::{self, Managed, free_port, wait_until};
use crate::{Error, tools};

/// A running control plane. Dropping it stops the processes.
pub struct ControlPlane {
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: String,
    token: String,
    // Field order is drop order: the API server must stop before etcd.
    procs: Vec<Managed>,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver with state in `dir`; `detached` processes outlive this one.
    pub fn start(dir: &Path, detached: bool) -> Result<Self, Error> {
        Self::start_with(dir, detached, false)
    }

    /// With `node`, the API server binds and advertises on the bridge address, its certificate
    /// names the `kubernetes` Service IP, ServiceAccount admission is on (token volumes), and
    /// kube-controller-manager also runs the controllers a node's Pods need.
    pub fn start_with(dir: &Path, detached: bool, node: bool) -> Result<Self, Error> {
        let assets = tools::kube_assets()?;
        std::fs::create_dir_all(dir.join("logs")).map_err(|e| Error::Io(e.to_string()))?;
        let pki = crate::certs::write(dir, node)?;
        let token = crate::random_token();
        let mut tokens = format!("{token},testenv-admin,testenv-admin,\"system:masters\"\n");
        if node {
            // The node's components authenticate with tokens too; the user names are the ones
            // the Node authorizer and the bootstrap RBAC roles expect.
            for (user, groups) in crate::node::COMPONENT_USERS {
                tokens.push_str(&format!(
                    "{},{user},{user},\"{groups}\"\n",
                    crate::node::component_token(&token, user)
                ));
            }
        }
        std::fs::write(dir.join("tokens.csv"), tokens).map_err(|e| Error::Io(e.to_string()))?;
        let host = if node {
            crate::network::HOST_IP.to_string()
        } else {
            "127.0.0.1".to_string()
        };

        let etcd_port = free_port();
        let peer_port = free_port();
        let mut etcd_cmd = Command::new(assets.join("etcd"));
        let client_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        etcd_cmd
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            // Test data is disposable; fsync dominates etcd latency on small disks.
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        let mut etcd = process::start("etcd", etcd_cmd, &dir.join("logs/etcd.log"), detached)?;
        wait_until(&mut etcd, Duration::from_secs(30), || {
            process::http_ok(etcd_port, "/health")
        })?;

        let api_port = free_port();
        let mut api_cmd = Command::new(assets.join("kube-apiserver"));
        let path = |f: &str| dir.join(f).display().to_string();
        api_cmd
            .arg(format!("--etcd-servers={client_url}"))
            .arg(format!("--bind-address={host}"))
            // Without a default route the API server cannot guess its own address; on a node
            // this address is also the `kubernetes` Service's endpoint, so Pods must reach it.
            .arg(format!("--advertise-address={host}"))
            .arg(format!("--secure-port={api_port}"))
            .arg(format!("--cert-dir={}", path("certs")))
            .arg(format!("--tls-cert-file={}", path("apiserver.crt")))
            .arg(format!("--tls-private-key-file={}", path("apiserver.key")))
            .arg(format!("--client-ca-file={}", path("ca.crt")))
            .arg(format!("--token-auth-file={}", path("tokens.csv")))
            .arg(if node {
                "--authorization-mode=Node,RBAC"
            } else {
                "--authorization-mode=RBAC"
            })
            .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
            .arg(format!("--service-account-key-file={}", path("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                path("sa.key")
            ))
            .arg(if node {
                format!(
                    "--service-cluster-ip-range={}",
                    crate::network::SERVICE_CIDR
                )
            } else {
                "--service-cluster-ip-range=10.0.0.0/24".to_string()
            })
            .arg("--allow-privileged=true")
            .arg("--profiling=false")
            .arg("--v=1");
        if node {
            api_cmd
                .arg(format!(
                    "--kubelet-client-certificate={}",
                    path("apiserver-kubelet.crt")
                ))
                .arg(format!(
                    "--kubelet-client-key={}",
                    path("apiserver-kubelet.key")
                ))
                // The node's name does not resolve; its InternalIP is the bridge address.
                .arg("--kubelet-preferred-address-types=InternalIP");
        } else {
            // No node mounts token volumes, so there is nothing for this plugin to do.
            api_cmd.arg("--disable-admission-plugins=ServiceAccount");
        }
        let mut api = process::start(
            "kube-apiserver",
            api_cmd,
            &dir.join("logs/kube-apiserver.log"),
            detached,
        )?;

        let server = format!("https://{host}:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(&kubeconfig, kubeconfig_yaml(&server, &pki.ca_pem, &token))
            .map_err(|e| Error::Io(e.to_string()))?;

        let probe_cfg = kubeconfig.clone();
        wait_until(&mut api, Duration::from_secs(90), || {
            block_on(readyz(probe_cfg.clone())).unwrap_or(false)
        })?;

        let mut procs = vec![api, etcd];
        if assets.join("kube-controller-manager").is_file() {
            let mut kcm_cmd = Command::new(assets.join("kube-controller-manager"));
            kcm_cmd
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .arg("--leader-elect=false")
                // Serving is not needed; port 0 avoids clashes between parallel test binaries.
                .arg("--secure-port=0")
                .arg(format!(
                    "--service-account-private-key-file={}",
                    path("sa.key")
                ))
                .arg(format!("--root-ca-file={}", path("ca.crt")))
                .arg(format!("--controllers={}", kcm_controllers(node)))
                .arg("--v=1");
            if node {
                // Otherwise kcm creates /usr/libexec/kubernetes/kubelet-plugins on the host.
                kcm_cmd.arg(format!("--flex-volume-plugin-dir={}", path("flexvolume")));
            }
            let kcm = process::start(
                "kube-controller-manager",
                kcm_cmd,
                &dir.join("logs/kube-controller-manager.log"),
                detached,
            )?;
            procs.insert(0, kcm);
        }

        Ok(Self {
            dir: dir.to_path_buf(),
            kubeconfig,
            server,
            token,
            procs,
        })
    }

    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn admin_token(&self) -> &str {
        &self.token
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Managed::pid).collect()
    }

    /// Detaches the processes from this value (for `make env-up`, which stops them by pid).
    pub fn into_pids(self) -> Vec<u32> {
        let pids = self.pids();
        for p in self.procs {
            std::mem::forget(p);
        }
        pids
    }

    /// A new admin client. Make one per tokio runtime (per test): a client's connections
    /// belong to the runtime that created it.
    pub async fn client(&self) -> kube::Client {
        client_from(&self.kubeconfig)
            .await
            .unwrap_or_else(|e| panic!("testenv: kube client: {e}"))
    }

    /// Creates a namespace with a unique name.
    pub async fn namespace(&self, prefix: &str) -> String {
        let name = crate::unique_name(prefix);
        let api: Api<Namespace> = Api::all(self.client().await);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
        }))
        .expect("namespace json");
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("testenv: create namespace {name}: {e}"));
        name
    }

    /// Applies every CRD in `dir` (server-side) and waits until each is Established.
    pub async fn install_crds(&self, dir: &Path) {
        install_crds(&self.client().await, dir)
            .await
            .unwrap_or_else(|e| panic!("testenv: install CRDs from {}: {e}", dir.display()))
    }
}

/// The controllers tests rely on. A node also needs the `kube-root-ca.crt` publisher (token
/// volumes mount it) and node-lifecycle (it lifts the not-ready taint every new Node gets;
/// without it Pods stay Pending with no event).
fn kcm_controllers(node: bool) -> String {
    let mut list = vec![
        "garbage-collector-controller",
        "deployment-controller",
        "replicaset-controller",
        "namespace-controller",
        "serviceaccount-controller",
    ];
    if node {
        list.extend([
            "root-ca-certificate-publisher-controller",
            "node-lifecycle-controller",
            "endpointslice-controller",
        ]);
    }
    list.join(",")
}

pub async fn client_from(kubeconfig: &Path) -> Result<kube::Client, Error> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| Error::Kube(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kube(e.to_string()))?;
    kube::Client::try_from(cfg).map_err(|e| Error::Kube(e.to_string()))
}

async fn readyz(kubeconfig: PathBuf) -> Result<bool, Error> {
    let client = client_from(&kubeconfig).await?;
    let req = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| Error::Kube(e.to_string()))?;
    Ok(client
        .request_text(req)
        .await
        .map(|t| t.trim() == "ok")
        .unwrap_or(false))
}

pub async fn install_crds(client: &kube::Client, dir: &Path) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::Io(format!("read {}: {e}", dir.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    entries.sort();
    let mut crds = Vec::new();
    for path in entries {
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io(e.to_string()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value =
                serde_yaml::Value::deserialize(doc).map_err(|e| Error::Io(e.to_string()))?;
            if value.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition = serde_yaml::from_value(value)
                .map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
            crds.push(crd);
        }
    }
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("testenv").force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(|e| Error::Kube(format!("apply CRD {name}: {e}")))?;
        names.push(name);
    }
    for name in names {
        let cond = kube::runtime::conditions::is_crd_established();
        tokio::time::timeout(
            Duration::from_secs(30),
            kube::runtime::wait::await_condition(api.clone(), &name, cond),
        )
        .await
        .map_err(|_| Error::Kube(format!("CRD {name} not Established after 30s")))?
        .map_err(|e| Error::Kube(e.to_string()))?;
    }
    Ok(())
}

pub(crate) fn kubeconfig_yaml(server: &str, ca_pem: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: testenv\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: testenv-admin\n  user:\n    token: {token}\ncontexts:\n- name: testenv\n  context:\n    cluster: testenv\n    user: testenv-admin\n    namespace: default\ncurrent-context: testenv\n"
    )
}

/// Runs a future to completion on a private runtime in its own thread, so it works both from
/// plain code and from inside a test's tokio runtime.
pub fn block_on<F, T>(fut: F) -> T
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(fut)
    })
    .join()
    .expect("testenv helper thread panicked")
}
