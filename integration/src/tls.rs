//! A throw-away certificate authority for tests.
//!
//! Tests must prove that berth trusts exactly the CA it was told about, so each
//! registry gets its own CA generated at start-up (nothing is installed into the
//! host trust store) and a server certificate for `127.0.0.1` / `localhost`
//! signed by it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A CA plus one server certificate it signed, written as PEM files in `dir`.
pub struct TestCa {
    /// `ca.pem`: give this to a client so it trusts the server.
    pub ca_pem_path: PathBuf,
    /// `server.pem` (leaf then CA) and `server-key.pem`, for servers that read files.
    pub server_cert_path: PathBuf,
    pub server_key_path: PathBuf,
    /// The same material in DER, for in-process rustls servers.
    pub ca_der: Vec<u8>,
    pub server_cert_der: Vec<u8>,
    pub server_key_der: Vec<u8>,
}

impl TestCa {
    /// Generates a fresh CA and a server certificate valid for `hosts`
    /// (IP addresses or DNS names) and writes the PEM files into `dir`.
    pub fn generate(dir: &Path, hosts: &[&str]) -> Result<TestCa> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "berth test CA");
        ca_params.distinguished_name = dn;
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let mut leaf_params = CertificateParams::new(hosts)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "berth test registry");
        leaf_params.distinguished_name = dn;
        let leaf_key = KeyPair::generate()?;
        let leaf = leaf_params.signed_by(&leaf_key, &ca)?;

        let ca_pem_path = dir.join("ca.pem");
        let server_cert_path = dir.join("server.pem");
        let server_key_path = dir.join("server-key.pem");
        std::fs::write(&ca_pem_path, ca.pem()).context("write ca.pem")?;
        std::fs::write(&server_cert_path, format!("{}{}", leaf.pem(), ca.pem()))
            .context("write server.pem")?;
        std::fs::write(&server_key_path, leaf_key.serialize_pem()).context("write key")?;

        Ok(TestCa {
            ca_pem_path,
            server_cert_path,
            server_key_path,
            ca_der: ca.der().to_vec(),
            server_cert_der: leaf.der().to_vec(),
            server_key_der: leaf_key.serialize_der(),
        })
    }
}
