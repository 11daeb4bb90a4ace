//! Self-managed webhook certificates: a CA and a serving certificate kept
//! in a Secret of the operator's namespace (shared by every replica), the
//! CA patched into the operator's own webhook configurations, the serving
//! certificate renewed when two thirds of its lifetime have passed.
//!
//! Replicas race safely: the Secret is created once (a conflict means
//! another replica won, and its certificate is used) and replaced with
//! its `resourceVersion`, so only one renewal lands. Deleting the Secret
//! rotates the CA as well; the next pass patches the new CA in.
//!
//! The CA rotates itself without a failed call: at two thirds of its life a
//! successor is made and published in the caBundle beside it, while the
//! serving certificate stays signed by the current CA; once the successor
//! has been published for [`PROMOTE_AFTER`] it signs the serving
//! certificate, and the old CA stays in the caBundle until it expires.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::tls::{CertStore, PemPair, TlsError};

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a successor CA is in the caBundle before it signs: every
/// replica re-reads the Secret and patches the caBundle within a minute,
/// and the API server picks the change up within seconds.
pub const PROMOTE_AFTER: Duration = Duration::from_secs(10 * 60);
/// A CA is valid from a little before it is made (clock skew).
const CA_BACKDATE: i64 = 300;
/// The successor CA and the previous one, beside the current.
const NEXT_CA_CRT: &str = "next-ca.crt";
const NEXT_CA_KEY: &str = "next-ca.key";
const PREVIOUS_CA_CRT: &str = "previous-ca.crt";
/// Secret keys: the serving pair (kubernetes.io/tls) and the CA.
const TLS_CRT: &str = "tls.crt";
const TLS_KEY: &str = "tls.key";
const CA_CRT: &str = "ca.crt";
const CA_KEY: &str = "ca.key";

/// Where the certificate lives and what it must cover.
#[derive(Debug, Clone)]
pub struct SelfManaged {
    /// Namespace of the Secret (the operator's own).
    pub namespace: String,
    /// Name of the Secret.
    pub secret: String,
    /// DNS names the serving certificate covers (the webhook Service).
    pub dns_names: Vec<String>,
    /// IP addresses it covers (`clientConfig.url` by IP).
    pub ip_addresses: Vec<IpAddr>,
    /// ValidatingWebhookConfiguration whose webhooks get the CA bundle.
    pub validating_config: Option<String>,
    /// MutatingWebhookConfiguration whose webhooks get the CA bundle.
    pub mutating_config: Option<String>,
    /// Lifetime of a serving certificate.
    pub validity: Duration,
}

/// What the Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The CA certificate (PEM) that signs the serving certificate.
    pub ca_cert: String,
    ca_key: String,
    /// The serving certificate and key.
    pub serving: PemPair,
    /// A successor CA (certificate, key), published but not signing yet.
    next: Option<(String, String)>,
    /// The CA the current one replaced, trusted until it expires.
    previous: Option<String>,
}

impl Bundle {
    /// The webhook configurations' caBundle: the current CA, and the
    /// successor and the previous one while they matter.
    pub fn ca_bundle(&self) -> String {
        let mut pem = self.ca_cert.trim_end().to_owned();
        for extra in [self.next.as_ref().map(|(c, _)| c), self.previous.as_ref()]
            .into_iter()
            .flatten()
        {
            pem.push('\n');
            pem.push_str(extra.trim_end());
        }
        pem.push('\n');
        pem
    }
}

/// What a pass over the Secret does, decided from its contents and the
/// time alone (`plan`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// Nothing is due.
    Keep,
    /// Write this bundle.
    Write(Box<Bundle>),
}

/// The start and end of `cert`'s validity, in Unix seconds.
fn validity(cert: &str) -> Option<(i64, i64)> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert.as_bytes()).ok()?;
    let x509 = pem.parse_x509().ok()?;
    Some((
        x509.validity().not_before.timestamp(),
        x509.validity().not_after.timestamp(),
    ))
}

/// Whether `now` is past two thirds of `cert`'s life (or it is unreadable).
fn past_two_thirds(cert: &str, now: i64) -> bool {
    validity(cert).is_none_or(|(start, end)| now >= start + (end - start) * 2 / 3)
}

/// Decides what `ensure_secret` writes at `now`: a fresh CA and certificate
/// when there is no usable CA; a successor CA at two thirds of the CA's
/// life; the successor promoted once published for [`PROMOTE_AFTER`]; an
/// expired previous CA dropped; a serving certificate renewed when due.
fn plan(current: Option<&Bundle>, opts: &SelfManaged, now: i64) -> Result<Step, TlsError> {
    let Some(current) = current.filter(|b| usable_ca(b)) else {
        let (ca_cert, ca_key) = generate_ca(now)?;
        let serving = issue(&ca_cert, &ca_key, opts, now)?;
        return Ok(Step::Write(Box::new(Bundle {
            ca_cert,
            ca_key,
            serving,
            next: None,
            previous: None,
        })));
    };
    let mut next = current.clone();
    let mut reissue = needs_renewal(&current.serving.cert, opts, now);
    if let Some(previous) = &next.previous
        && validity(previous).is_none_or(|(_, end)| now >= end)
    {
        next.previous = None;
    }
    match next.next.clone() {
        None if past_two_thirds(&current.ca_cert, now) => {
            next.next = Some(generate_ca(now)?);
        }
        Some((ca_cert, ca_key))
            if validity(&ca_cert)
                .is_some_and(|(start, _)| now >= start + CA_BACKDATE + secs(PROMOTE_AFTER)) =>
        {
            next.previous = Some(std::mem::replace(&mut next.ca_cert, ca_cert));
            next.ca_key = ca_key;
            next.next = None;
            reissue = true;
        }
        _ => {}
    }
    if reissue {
        next.serving = issue(&next.ca_cert, &next.ca_key, opts, now)?;
    }
    Ok(if next == *current {
        Step::Keep
    } else {
        Step::Write(Box::new(next))
    })
}

/// Why the certificate could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A Kubernetes call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Certificate material was unusable or could not be made.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn at(unix: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(unix).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// A new CA, valid from `now`.
fn generate_ca(now: i64) -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("probity-webhook-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = at(now - CA_BACKDATE);
    params.not_after = at(now.saturating_add(secs(CA_VALIDITY)));
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A serving certificate for `opts`' names, signed by the CA, valid from
/// `now`.
fn issue(ca_cert: &str, ca_key: &str, opts: &SelfManaged, now: i64) -> Result<PemPair, TlsError> {
    let ca_key = KeyPair::from_pem(ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(ca_cert, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(opts
        .dns_names
        .first()
        .map_or("probity-webhook", String::as_str));
    let mut sans = Vec::new();
    for name in &opts.dns_names {
        sans.push(SanType::DnsName(name.as_str().try_into()?));
    }
    sans.extend(opts.ip_addresses.iter().copied().map(SanType::IpAddress));
    params.subject_alt_names = sans;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    // A little backdating absorbs clock skew between replicas and the API
    // server (at most a tenth of the lifetime, which counts it).
    params.not_before = at(now - (secs(opts.validity) / 10).min(60));
    // Never past the CA: a leaf outliving its issuer would fail to verify
    // before its own renewal came due.
    let ca_end = validity(ca_cert).map_or(i64::MAX, |(_, end)| end);
    params.not_after = at(now.saturating_add(secs(opts.validity)).min(ca_end));
    let cert = params.signed_by(&key, &issuer)?;
    Ok(PemPair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Whether `cert` must be replaced: unreadable, past two thirds of its
/// lifetime, or not covering every name in `opts`.
pub fn needs_renewal(cert: &str, opts: &SelfManaged, now: i64) -> bool {
    if past_two_thirds(cert, now) {
        return true;
    }
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert.as_bytes()) else {
        return true;
    };
    let Ok(x509) = pem.parse_x509() else {
        return true;
    };
    let Ok(Some(san)) = x509.subject_alternative_name() else {
        return !(opts.dns_names.is_empty() && opts.ip_addresses.is_empty());
    };
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &san.value.general_names {
        match name {
            x509_parser::extensions::GeneralName::DNSName(d) => dns.push((*d).to_owned()),
            x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                let ip = match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                    _ => None,
                };
                ips.extend(ip);
            }
            _ => {}
        }
    }
    !(opts.dns_names.iter().all(|d| dns.contains(d))
        && opts.ip_addresses.iter().all(|ip| ips.contains(ip)))
}

/// Whether the bundle's CA certificate and key can sign.
fn usable_ca(bundle: &Bundle) -> bool {
    KeyPair::from_pem(&bundle.ca_key)
        .and_then(|key| Issuer::from_ca_cert_pem(&bundle.ca_cert, key))
        .is_ok()
}

fn read_bundle(secret: &Secret) -> Option<Bundle> {
    let data = secret.data.as_ref()?;
    let text = |key: &str| {
        data.get(key)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    Some(Bundle {
        ca_cert: text(CA_CRT)?,
        ca_key: text(CA_KEY)?,
        serving: PemPair {
            cert: text(TLS_CRT)?,
            key: text(TLS_KEY)?,
        },
        next: text(NEXT_CA_CRT).zip(text(NEXT_CA_KEY)),
        previous: text(PREVIOUS_CA_CRT),
    })
}

fn secret_of(bundle: &Bundle, opts: &SelfManaged, resource_version: Option<String>) -> Secret {
    let data = [
        (CA_CRT, Some(&bundle.ca_cert)),
        (CA_KEY, Some(&bundle.ca_key)),
        (TLS_CRT, Some(&bundle.serving.cert)),
        (TLS_KEY, Some(&bundle.serving.key)),
        (NEXT_CA_CRT, bundle.next.as_ref().map(|(c, _)| c)),
        (NEXT_CA_KEY, bundle.next.as_ref().map(|(_, k)| k)),
        (PREVIOUS_CA_CRT, bundle.previous.as_ref()),
    ]
    .into_iter()
    .filter_map(|(k, v)| Some((k, v?)))
    .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(opts.secret.clone()),
            namespace: Some(opts.namespace.clone()),
            resource_version,
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    "probity-operator".to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Reads the Secret, creating or renewing what is missing or due, and
/// returns what it holds afterwards.
///
/// # Errors
///
/// When the API refuses (other than a lost race) or generation fails.
pub async fn ensure_secret(client: &Client, opts: &SelfManaged) -> Result<Bundle, CertError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), &opts.namespace);
    for _ in 0..3 {
        let existing = api.get_opt(&opts.secret).await?;
        let current = existing.as_ref().and_then(read_bundle);
        let bundle = match plan(current.as_ref(), opts, unix_now())? {
            Step::Keep => {
                if let Some(b) = current {
                    return Ok(b);
                }
                continue;
            }
            Step::Write(bundle) => *bundle,
        };
        let result = match existing {
            Some(secret) => {
                // Only the data is the operator's: a Secret the chart
                // created keeps Helm's labels and annotations.
                let mut next = secret_of(&bundle, opts, secret.metadata.resource_version.clone());
                if secret.metadata.labels.is_some() || secret.metadata.annotations.is_some() {
                    next.metadata.labels = secret.metadata.labels.clone();
                    next.metadata.annotations = secret.metadata.annotations.clone();
                }
                api.replace(&opts.secret, &PostParams::default(), &next)
                    .await
                    .map(drop)
            }
            None => api
                .create(&PostParams::default(), &secret_of(&bundle, opts, None))
                .await
                .map(drop),
        };
        match result {
            Ok(()) => {
                tracing::info!(secret = %opts.secret, "webhook serving certificate issued");
                return Ok(bundle);
            }
            // Another replica wrote first: use what it wrote.
            Err(kube::Error::Api(e)) if e.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let existing = api.get(&opts.secret).await?;
    read_bundle(&existing).ok_or_else(|| {
        CertError::Tls(TlsError::Pem(format!(
            "Secret {}/{} lacks {CA_CRT}, {CA_KEY}, {TLS_CRT} or {TLS_KEY}",
            opts.namespace, opts.secret
        )))
    })
}

/// Writes `ca` into every webhook of the named configurations whose
/// caBundle differs. A configuration that does not exist yet is skipped.
///
/// # Errors
///
/// When the API refuses a read or an update.
pub async fn ensure_ca_bundle(
    client: &Client,
    opts: &SelfManaged,
    ca: &str,
) -> Result<(), kube::Error> {
    let want = ByteString(ca.as_bytes().to_vec());
    if let Some(name) = &opts.validating_config {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        patch_bundles(&api, name, &want, |c| {
            c.webhooks
                .iter_mut()
                .flatten()
                .map(|w| &mut w.client_config)
                .collect()
        })
        .await?;
    }
    if let Some(name) = &opts.mutating_config {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        patch_bundles(&api, name, &want, |c| {
            c.webhooks
                .iter_mut()
                .flatten()
                .map(|w| &mut w.client_config)
                .collect()
        })
        .await?;
    }
    Ok(())
}

/// Sets `want` as the caBundle of every client config `configs` yields
/// from configuration `name`, replacing it when anything changed.
async fn patch_bundles<K>(
    api: &Api<K>,
    name: &str,
    want: &ByteString,
    configs: impl Fn(&mut K) -> Vec<&mut WebhookClientConfig>,
) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(mut config) = api.get_opt(name).await? else {
        return Ok(());
    };
    let mut changed = false;
    for client_config in configs(&mut config) {
        if client_config.ca_bundle.as_ref() != Some(want) {
            client_config.ca_bundle = Some(want.clone());
            changed = true;
        }
    }
    if changed {
        api.replace(name, &PostParams::default(), &config).await?;
        tracing::info!(configuration = %name, "caBundle updated");
    }
    Ok(())
}

/// The first certificate to serve, from the Secret (created if needed).
///
/// # Errors
///
/// When the Secret cannot be read or written.
pub async fn initial(
    client: &Client,
    opts: &SelfManaged,
) -> Result<(CertStore, Bundle), CertError> {
    let bundle = ensure_secret(client, opts).await?;
    let store = CertStore::new(&bundle.serving)?;
    if let Err(e) = ensure_ca_bundle(client, opts, &bundle.ca_bundle()).await {
        tracing::warn!(error = %e, "cannot write the caBundle yet; retrying");
    }
    Ok((store, bundle))
}

/// How often the Secret is re-read: often enough to renew well before
/// expiry and to pick up another replica's renewal.
pub fn check_interval(validity: Duration) -> Duration {
    (validity / 12).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Keeps the served certificate, the Secret and the caBundles current.
pub async fn maintain(client: Client, opts: SelfManaged, store: CertStore, mut served: Bundle) {
    let every = check_interval(opts.validity);
    loop {
        tokio::time::sleep(every + Duration::from_millis(fastrand::u64(0..250))).await;
        match ensure_secret(&client, &opts).await {
            Ok(bundle) => {
                if bundle.serving != served.serving {
                    match store.replace(&bundle.serving) {
                        Ok(()) => {
                            tracing::info!("webhook serving certificate reloaded");
                            served = bundle.clone();
                        }
                        Err(e) => tracing::warn!(error = %e, "new webhook certificate is unusable"),
                    }
                }
                if let Err(e) = ensure_ca_bundle(&client, &opts, &bundle.ca_bundle()).await {
                    tracing::warn!(error = %e, "cannot update the caBundle; retrying");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot maintain the webhook certificate; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn opts(validity: Duration) -> SelfManaged {
        SelfManaged {
            namespace: "probity".to_owned(),
            secret: "probity-webhook-tls".to_owned(),
            dns_names: vec!["probity-webhook.probity.svc".to_owned()],
            ip_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            validating_config: None,
            mutating_config: None,
            validity,
        }
    }

    #[test]
    fn issued_certificates_cover_the_names_and_renew_at_two_thirds() -> Result<(), TlsError> {
        let o = opts(Duration::from_secs(3000));
        let (ca_cert, ca_key) = generate_ca(unix_now())?;
        let pair = issue(&ca_cert, &ca_key, &o, unix_now())?;
        pair.certified_key()?;
        let now = unix_now();
        assert!(!needs_renewal(&pair.cert, &o, now));
        // not_before is backdated 60 s: two thirds of 3060 s is 2040 s.
        assert!(!needs_renewal(&pair.cert, &o, now + 1900));
        assert!(needs_renewal(&pair.cert, &o, now + 2000));
        let mut more = o.clone();
        more.dns_names.push("other.svc".to_owned());
        assert!(needs_renewal(&pair.cert, &more, now));
        assert!(needs_renewal("not a certificate", &o, now));
        Ok(())
    }

    #[test]
    fn a_leaf_never_outlives_its_ca() -> Result<(), TlsError> {
        let (ca_cert, ca_key) = generate_ca(unix_now())?;
        let (_, ca_end) = validity(&ca_cert).expect("CA validity");
        let century = opts(Duration::from_secs(100 * 365 * 24 * 3600));
        let pair = issue(&ca_cert, &ca_key, &century, unix_now())?;
        let (_, pem) = x509_parser::pem::parse_x509_pem(pair.cert.as_bytes()).expect("pem");
        let leaf_end = pem
            .parse_x509()
            .expect("x509")
            .validity()
            .not_after
            .timestamp();
        assert!(leaf_end <= ca_end, "leaf ends {leaf_end}, CA {ca_end}");
        let forever = opts(Duration::MAX);
        issue(&ca_cert, &ca_key, &forever, unix_now())?;
        Ok(())
    }

    /// Whether the serving certificate of `bundle` verifies, at `now`,
    /// against the roots of its caBundle, as the API server checks it.
    fn verifies(bundle: &Bundle, now: i64) -> bool {
        use rustls::client::danger::ServerCertVerifier as _;
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(bundle.ca_bundle().as_bytes()).flatten() {
            let _ = roots.add(cert);
        }
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let Ok(verifier) =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots.into(), provider)
                .build()
        else {
            return false;
        };
        let Some(leaf) = CertificateDer::pem_slice_iter(bundle.serving.cert.as_bytes())
            .flatten()
            .next()
        else {
            return false;
        };
        let at = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now).unwrap_or(0)));
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        verifier
            .verify_server_cert(&leaf, &[], &name, &[], at)
            .is_ok()
    }

    fn certificates(bundle: &Bundle) -> usize {
        bundle.ca_bundle().matches("BEGIN CERTIFICATE").count()
    }

    fn written(step: Step) -> Bundle {
        match step {
            Step::Write(bundle) => *bundle,
            Step::Keep => panic!("expected a write"),
        }
    }

    #[test]
    fn the_ca_rotates_with_an_overlap_and_never_a_gap() -> Result<(), TlsError> {
        let o = opts(Duration::from_secs(30 * 24 * 3600));
        let t0 = unix_now();
        let first = written(plan(None, &o, t0)?);
        assert!(verifies(&first, t0 + 60));
        assert_eq!(plan(Some(&first), &o, t0 + 60)?, Step::Keep);
        assert_eq!(certificates(&first), 1);

        // Two thirds into the CA's life: a successor is published, and the
        // current CA keeps signing.
        let t1 = t0 + secs(CA_VALIDITY) * 7 / 10;
        let second = written(plan(Some(&first), &o, t1)?);
        assert_eq!(second.ca_cert, first.ca_cert);
        assert!(second.next.is_some());
        assert_eq!(certificates(&second), 2);
        assert!(verifies(&second, t1 + 1));
        assert_eq!(
            plan(Some(&second), &o, t1 + 60)?,
            Step::Keep,
            "not promoted yet"
        );

        // Published long enough: the successor signs, the old CA stays
        // trusted.
        let t2 = t1 + CA_BACKDATE + secs(PROMOTE_AFTER);
        let third = written(plan(Some(&second), &o, t2)?);
        assert_eq!(Some(&third.ca_cert), second.next.as_ref().map(|(c, _)| c));
        assert_eq!(third.previous.as_ref(), Some(&first.ca_cert));
        assert_ne!(third.serving, second.serving, "re-issued by the new CA");
        assert!(verifies(&third, t2 + 1));
        // A replica still serving the old certificate verifies too.
        let mut lagging = third.clone();
        lagging.serving = second.serving.clone();
        assert!(verifies(&lagging, t2 + 1));

        // Once the old CA expires it leaves the caBundle.
        let t3 = t0 + secs(CA_VALIDITY) + 1;
        let fourth = written(plan(Some(&third), &o, t3)?);
        assert!(fourth.previous.is_none());
        assert_eq!(certificates(&fourth), 1);
        assert!(verifies(&fourth, t3 + 1));
        Ok(())
    }
}
