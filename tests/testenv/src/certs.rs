//! A throwaway CA, the API server's serving certificate and the service-account signing key.

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

use crate::Error;

pub struct Pki {
    pub ca_pem: String,
}

fn rc(e: rcgen::Error) -> Error {
    Error::Io(format!("certificate generation: {e}"))
}

/// Writes ca.crt, apiserver.crt/.key and sa.key into `dir`. With `node`, the serving
/// certificate also names the bridge address and the `kubernetes` Service (what Pods dial),
/// and apiserver-kubelet.crt/.key let the API server reach the kubelet (logs, exec).
pub fn write(dir: &Path, node: bool) -> Result<Pki, Error> {
    let ca_key = KeyPair::generate().map_err(rc)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "tracking-operator testenv CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).map_err(rc)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().map_err(rc)?;
    let mut names = vec![
        "localhost".to_string(),
        "kubernetes.default.svc".to_string(),
    ];
    if node {
        names.extend(
            [
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc.cluster.local",
            ]
            .map(String::from),
        );
    }
    let mut server_params = CertificateParams::new(names).map_err(rc)?;
    server_params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    if node {
        // Strict TLS clients (rustls, Go) check the IP they dialled: the bridge address and
        // the `kubernetes` Service IP that in-cluster clients use.
        for ip in [crate::network::HOST_IP, crate::network::SERVICE_IP] {
            server_params
                .subject_alt_names
                .push(SanType::IpAddress(ip.into()));
        }
    }
    server_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let server_cert = server_params.signed_by(&server_key, &issuer).map_err(rc)?;

    let sa_key = KeyPair::generate().map_err(rc)?;

    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| Error::Io(format!("write {name}: {e}")))
    };
    write("ca.crt", &ca_cert.pem())?;
    write("apiserver.crt", &server_cert.pem())?;
    write("apiserver.key", &server_key.serialize_pem())?;
    write("sa.key", &sa_key.serialize_pem())?;
    // --service-account-key-file wants the public half; it does not derive it from a PKCS#8 key.
    write("sa.pub", &sa_key.public_key_pem())?;
    if node {
        let key = KeyPair::generate().map_err(rc)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rc)?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver-kubelet-client");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &issuer).map_err(rc)?;
        write("apiserver-kubelet.crt", &cert.pem())?;
        write("apiserver-kubelet.key", &key.serialize_pem())?;
    }
    Ok(Pki {
        ca_pem: ca_cert.pem(),
    })
}
