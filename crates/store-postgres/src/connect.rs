//! Connections to the server: the URL and TLS mode from the config, and the
//! bounded pool of read connections (`storage.pool_size`), which replaces a
//! connection the server closed instead of handing it out again.

use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use secflow_core::config::{StorageConfig, TlsMode};
use secflow_core::record::ErrorKind;
use secflow_store::StorageError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long connecting may take before the attempt fails (a server that is
/// gone must not stall a batch or a query for long).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A store config that cannot give a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Url(#[from] secflow_core::config::StorageUrlError),
    #[error("storage.url is not a valid PostgreSQL url")]
    BadUrl(#[source] tokio_postgres::Error),
    #[error("cannot read storage.tls_ca_file {path}")]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("storage.tls_ca_file {path} holds no usable certificate")]
    NoCertificate { path: std::path::PathBuf },
    #[error("cannot set up TLS to PostgreSQL")]
    Tls(#[source] rustls::Error),
}

/// Everything needed to open one more connection.
#[derive(Clone)]
pub(crate) struct Connector {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
    location: String,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("location", &self.location)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Connector {
    pub(crate) fn from_config(config: &StorageConfig) -> Result<Connector, StorageError> {
        let location_of = |url: &str| StorageConfig::postgres_location(url);
        let fail = |location: String, e: ConnectError| StorageError::Open {
            location,
            kind: ErrorKind::StorageError,
            source: Box::new(e),
        };
        let url = config
            .postgres_url()
            .map_err(|e| fail("postgres server".into(), e.into()))?;
        let location = location_of(&url);
        let mut pg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| fail(location.clone(), ConnectError::BadUrl(e)))?;
        pg.connect_timeout(CONNECT_TIMEOUT);
        pg.keepalives(true);
        pg.keepalives_idle(Duration::from_secs(30));
        pg.application_name("secflow");
        let tls = match config.tls {
            TlsMode::Disable => {
                pg.ssl_mode(SslMode::Disable);
                None
            }
            TlsMode::Prefer | TlsMode::Require => {
                pg.ssl_mode(if config.tls == TlsMode::Require {
                    SslMode::Require
                } else {
                    SslMode::Prefer
                });
                Some(
                    tls_connector(config.tls_ca_file.as_deref())
                        .map_err(|e| fail(location.clone(), e))?,
                )
            }
        };
        Ok(Connector {
            config: pg,
            tls,
            location,
        })
    }

    pub(crate) fn location(&self) -> &str {
        &self.location
    }

    /// A new connection; its I/O task runs on the current runtime until the
    /// connection closes.
    pub(crate) async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let location = self.location.clone();
        let report = move |e: tokio_postgres::Error| {
            tracing::warn!(location = %location, error = %e, "postgres connection closed");
        };
        match &self.tls {
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(async move { connection.await.unwrap_or_else(report) });
                Ok(client)
            }
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(async move { connection.await.unwrap_or_else(report) });
                Ok(client)
            }
        }
    }
}

/// A rustls connector that verifies the server against `ca_file`'s
/// certificates, else the public web roots.
fn tls_connector(ca_file: Option<&std::path::Path>) -> Result<MakeRustlsConnect, ConnectError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let text = std::fs::read(path).map_err(|source| ConnectError::CaFile {
                path: path.to_path_buf(),
                source,
            })?;
            let no_certificate = || ConnectError::NoCertificate {
                path: path.to_path_buf(),
            };
            for cert in CertificateDer::pem_slice_iter(&text) {
                roots
                    .add(cert.map_err(|_| no_certificate())?)
                    .map_err(|_| no_certificate())?;
            }
            if roots.is_empty() {
                return Err(no_certificate());
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ConnectError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// At most `size` read connections, opened on demand and kept while open.
#[derive(Debug)]
pub(crate) struct Pool {
    connector: Connector,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
}

/// A connection lent out by the pool; back to it when dropped, unless closed.
pub(crate) struct Pooled {
    client: Option<Client>,
    pool: Arc<Pool>,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    pub(crate) fn new(connector: Connector, size: usize) -> Pool {
        Pool {
            connector,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
        }
    }

    /// Opens one connection and keeps it idle.
    pub(crate) async fn warm(&self) -> Result<(), tokio_postgres::Error> {
        let client = self.connector.connect().await?;
        self.lock().push(client);
        Ok(())
    }

    /// An idle open connection, else a new one; waits while `size` are lent.
    pub(crate) async fn get(self: &Arc<Pool>) -> Result<Pooled, tokio_postgres::Error> {
        // The semaphore is never closed.
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the pool's semaphore is never closed"));
        let idle = {
            let mut idle = self.lock();
            idle.retain(|c| !c.is_closed());
            idle.pop()
        };
        let client = match idle {
            Some(client) => client,
            None => self.connector.connect().await?,
        };
        Ok(Pooled {
            client: Some(client),
            pool: Arc::clone(self),
            _permit: permit,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Deref for Pooled {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client
            .as_ref()
            .unwrap_or_else(|| unreachable!("a pooled connection is taken only on drop"))
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(client) = self.client.take().filter(|c| !c.is_closed()) {
            self.pool.lock().push(client);
        }
    }
}
