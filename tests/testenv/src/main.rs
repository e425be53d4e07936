//! `testenv up` / `testenv down`: the long-lived local environment behind `make env-up`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use testenv::{Cluster, ControlPlane, Moto, REGION, block_on, client_from, install_crds, process};

#[derive(Parser)]
#[command(about = "Local kube-apiserver + etcd + moto for tracking-operator")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start everything in the background and write kubeconfig, env and pids into DIR.
    Up {
        #[arg(long, default_value = ".local")]
        dir: PathBuf,
        /// Also apply the CRDs found in this folder.
        #[arg(long)]
        crds: Option<PathBuf>,
        /// Also start a node (kubelet + containerd) so Pods run; the API server and moto then
        /// listen on the pod bridge's address. Needs root and `make tools`.
        #[arg(long)]
        node: bool,
    },
    /// Stop what `up` started and remove DIR.
    Down {
        #[arg(long, default_value = ".local")]
        dir: PathBuf,
    },
}

fn main() {
    let args = Args::parse();
    let result = match args.cmd {
        Cmd::Up { dir, crds, node } => up(dir, crds, node),
        Cmd::Down { dir } => down(dir),
    };
    if let Err(e) = result {
        eprintln!("testenv: {e}");
        std::process::exit(1);
    }
}

fn up(dir: PathBuf, crds: Option<PathBuf>, node: bool) -> Result<(), testenv::Error> {
    if dir.join("pids").exists() {
        return Err(testenv::Error::Io(format!(
            "{} already holds a running environment; run `make env-down` first",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir.join("logs")).map_err(|e| testenv::Error::Io(e.to_string()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| testenv::Error::Io(e.to_string()))?;
    let (cp, moto, node_pids) = if node {
        testenv::node::record_detached(&dir);
        let cluster = match Cluster::start(&dir, true) {
            Ok(c) => c,
            Err(e) => {
                // Whatever started must not outlive a failed start.
                kill_pids_in(&dir);
                testenv::node::teardown(&dir);
                return Err(e);
            }
        };
        let Cluster { kube, moto, node } = cluster;
        (kube, moto, node.into_pids())
    } else {
        (
            ControlPlane::start(&dir, true)?,
            Moto::start(&dir.join("logs"), true)?,
            Vec::new(),
        )
    };
    if let Some(crds) = crds {
        let kubeconfig = cp.kubeconfig_path().to_path_buf();
        block_on(async move {
            let client = client_from(&kubeconfig).await?;
            install_crds(&client, &crds).await
        })?;
    }
    let env = format!(
        "export KUBECONFIG={kc}\nexport AWS_ENDPOINT_URL={ep}\nexport AWS_REGION={REGION}\nexport AWS_DEFAULT_REGION={REGION}\nexport AWS_ACCESS_KEY_ID=testing\nexport AWS_SECRET_ACCESS_KEY=testing\n",
        kc = cp.kubeconfig_path().display(),
        ep = moto.endpoint()
    );
    std::fs::write(dir.join("env"), &env).map_err(|e| testenv::Error::Io(e.to_string()))?;
    let server = cp.server().to_string();
    let endpoint = moto.endpoint();
    let mut pids = node_pids;
    pids.extend(cp.into_pids());
    pids.push(moto.into_pid());
    let pid_text: String = pids.iter().map(|p| format!("{p}\n")).collect();
    std::fs::write(dir.join("pids"), pid_text).map_err(|e| testenv::Error::Io(e.to_string()))?;
    println!("kube-apiserver  {server}");
    println!("moto (AWS)      {endpoint}");
    println!("kubeconfig      {}", dir.join("kubeconfig").display());
    println!("environment     source {}", dir.join("env").display());
    if node {
        println!(
            "node            {} (kubelet + containerd)",
            testenv::node::NODE_NAME
        );
    }
    Ok(())
}

/// Every process a (partly) started environment recorded.
fn kill_pids_in(dir: &std::path::Path) {
    for file in ["pids", "node/pids"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        for pid in text
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse::<u32>().ok())
        {
            if process::alive(pid) {
                process::terminate(pid);
            }
        }
    }
}

fn down(dir: PathBuf) -> Result<(), testenv::Error> {
    if dir.join("node").is_dir() {
        // The node first: the kubelet must stop before the API server, and the host is
        // restored from the state the node saved when it started.
        testenv::node::teardown(&dir);
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("pids")) {
        for pid in text.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
            if process::alive(pid) {
                process::terminate(pid);
            }
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| testenv::Error::Io(e.to_string()))?;
    }
    println!("stopped and removed {}", dir.display());
    Ok(())
}
