//! The TLS client set-up of SecFlow's HTTP scanners (ferox, nuclei).
//!
//! A scanner must reach self-signed and expired hosts too, so it needs a rustls
//! certificate verifier that accepts any chain. That verifier is the one piece of
//! the scanners' TLS that can go subtly wrong (it must still check the handshake
//! signatures, or the "TLS" proves nothing about the peer), so it lives once, here,
//! with the rest of the client configuration both scanners build the same way:
//! rustls with the ring provider and its safe default protocol versions.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How a server's certificate is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateCheck {
    /// The chain must lead to a Mozilla root and name the host.
    MozillaRoots,
    /// Any chain and name is accepted; the handshake signatures are still checked.
    AcceptAny,
}

/// A rustls client configuration with the ring provider and the safe default
/// protocol versions, no client certificate and no ALPN (the caller adds what
/// it offers).
pub fn client_config(check: CertificateCheck) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder =
        ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?;
    let config = match check {
        CertificateCheck::MozillaRoots => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        CertificateCheck::AcceptAny => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(algorithms)))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// Accepts any server certificate but still checks the handshake signatures
/// with the provider's algorithms.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ClientConnection, ServerConfig, ServerConnection};

    // The self-signed `localhost` / `127.0.0.1` certificate the integration
    // tests' HTTPS fixture serves.
    const CERT: &str = include_str!("../../../tests/fixtures/tls/localhost.crt");
    const KEY: &str = include_str!("../../../tests/fixtures/tls/localhost.key");

    /// Runs a TLS handshake in memory between a client with `check` and a server
    /// with the self-signed certificate; the client's verdict.
    fn handshake_with_self_signed_server(check: CertificateCheck) -> Result<(), rustls::Error> {
        let certs = CertificateDer::pem_slice_iter(CERT.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("fixture certificate parses");
        let key = PrivateKeyDer::from_pem_slice(KEY.as_bytes()).expect("fixture key parses");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server_config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("server protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("fixture certificate and key match");
        let mut server = ServerConnection::new(Arc::new(server_config)).expect("server");
        let name = ServerName::try_from("localhost").expect("server name");
        let config = client_config(check).expect("client config");
        let mut client = ClientConnection::new(Arc::new(config), name).expect("client");
        // A TLS 1.3 handshake takes two round trips; bound the loop so that a
        // stalled handshake fails the test instead of hanging it.
        for _ in 0..8 {
            if !client.is_handshaking() && !server.is_handshaking() {
                return Ok(());
            }
            let mut wire = Vec::new();
            client
                .write_tls(&mut wire)
                .expect("client writes to memory");
            server.read_tls(&mut wire.as_slice()).expect("server reads");
            // The server's error is the alert the client is about to receive.
            let _ = server.process_new_packets();
            let mut wire = Vec::new();
            server
                .write_tls(&mut wire)
                .expect("server writes to memory");
            client.read_tls(&mut wire.as_slice()).expect("client reads");
            client.process_new_packets()?;
        }
        panic!("the handshake did not finish in 8 round trips");
    }

    #[test]
    fn accept_any_completes_a_handshake_with_a_self_signed_server() {
        assert_eq!(
            handshake_with_self_signed_server(CertificateCheck::AcceptAny),
            Ok(())
        );
    }

    #[test]
    fn mozilla_roots_refuse_a_self_signed_server() {
        let verdict = handshake_with_self_signed_server(CertificateCheck::MozillaRoots);
        assert!(
            matches!(verdict, Err(rustls::Error::InvalidCertificate(_))),
            "{verdict:?}"
        );
    }

    #[test]
    fn the_configuration_offers_no_alpn_of_its_own() {
        for check in [CertificateCheck::MozillaRoots, CertificateCheck::AcceptAny] {
            let config = client_config(check).expect("client config");
            assert!(config.alpn_protocols.is_empty());
        }
    }
}
