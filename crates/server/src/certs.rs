//! Certificates for trying TLS out and for tests: a self-signed one for
//! this machine (`natter cert --self-signed`), and a small certificate
//! authority that issues server certificates (what tests use, so that the
//! client verifies a chain the way it would in production).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// The names a certificate for this machine covers.
pub const LOCAL_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// A certificate and its private key, both PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A self-signed certificate for `names` (DNS names or IP addresses).
pub fn self_signed(names: &[&str]) -> Result<Pem, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(to_strings(names))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "natter (self-signed)");
    let cert = params.self_signed(&key)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A certificate authority that lives in memory.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    pub fn new(name: &str) -> Result<Authority, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Authority { issuer })
    }

    /// The CA's own certificate, for clients to trust.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names`, signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Result<Pem, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(to_strings(names))?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("natter"),
        );
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    }
}

fn to_strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}
