//! Certificates for one control plane: a CA, the API server's serving
//! certificate (IP SANs 127.0.0.1, and for pods on a node the `kubernetes`
//! Service's 10.96.0.1), an admin client certificate in `system:masters`,
//! the node's kubelet client certificate (`system:node:<name>` in
//! `system:nodes`), the API server's client certificate for kubelets, and
//! the service-account signing key.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::Error;

/// The `kubernetes` Service's cluster IP (the first of 10.96.0.0/16): pods
/// on a node reach the API server there.
pub(crate) const KUBERNETES_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// Paths of the PEM files written by [`write`].
#[derive(Debug, Clone)]
pub(crate) struct Pki {
    pub(crate) ca_cert: PathBuf,
    pub(crate) serving_cert: PathBuf,
    pub(crate) serving_key: PathBuf,
    pub(crate) admin_cert: PathBuf,
    pub(crate) admin_key: PathBuf,
    pub(crate) node_cert: PathBuf,
    pub(crate) node_key: PathBuf,
    pub(crate) kubelet_client_cert: PathBuf,
    pub(crate) kubelet_client_key: PathBuf,
    pub(crate) sa_key: PathBuf,
    pub(crate) sa_pub: PathBuf,
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

fn leaf(
    dn: DistinguishedName,
    sans: Vec<SanType>,
    usage: ExtendedKeyUsagePurpose,
    issuer: &CertifiedIssuer<'_, KeyPair>,
) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Generates fresh key material into `dir`.
pub(crate) fn write(dir: &Path) -> Result<Pki, Error> {
    let gen_err = |e: rcgen::Error| Error::Pki(e.to_string());

    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = name("probity-testenv-ca", None);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(gen_err)?)
        .map_err(gen_err)?;

    let (serving_cert, serving_key) = leaf(
        name("kube-apiserver", None),
        vec![
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V4(KUBERNETES_SERVICE_IP)),
            SanType::DnsName("localhost".try_into().map_err(gen_err)?),
            SanType::DnsName("kubernetes.default.svc".try_into().map_err(gen_err)?),
        ],
        ExtendedKeyUsagePurpose::ServerAuth,
        &ca,
    )
    .map_err(gen_err)?;
    let client = |user: &str, group: &str| {
        leaf(
            name(user, Some(group)),
            Vec::new(),
            ExtendedKeyUsagePurpose::ClientAuth,
            &ca,
        )
        .map_err(gen_err)
    };
    let (admin_cert, admin_key) = client("probity-admin", "system:masters")?;
    let node_user = format!("system:node:{}", crate::node::NODE_NAME);
    let (node_cert, node_key) = client(&node_user, "system:nodes")?;
    let (kubelet_client_cert, kubelet_client_key) =
        client("kube-apiserver-kubelet-client", "system:masters")?;
    let sa = KeyPair::generate().map_err(gen_err)?;

    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        node_cert: dir.join("node.crt"),
        node_key: dir.join("node.key"),
        kubelet_client_cert: dir.join("kubelet-client.crt"),
        kubelet_client_key: dir.join("kubelet-client.key"),
        sa_key: dir.join("sa.key"),
        sa_pub: dir.join("sa.pub"),
    };
    let files = [
        (&pki.ca_cert, ca.pem()),
        (&pki.serving_cert, serving_cert),
        (&pki.serving_key, serving_key),
        (&pki.admin_cert, admin_cert),
        (&pki.admin_key, admin_key),
        (&pki.node_cert, node_cert),
        (&pki.node_key, node_key),
        (&pki.kubelet_client_cert, kubelet_client_cert),
        (&pki.kubelet_client_key, kubelet_client_key),
        (&pki.sa_key, sa.serialize_pem()),
        (&pki.sa_pub, sa.public_key_pem()),
    ];
    for (path, pem) in files {
        std::fs::write(path, pem).map_err(|e| Error::io(path, e))?;
    }
    Ok(pki)
}
