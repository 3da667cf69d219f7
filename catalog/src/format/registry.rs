//! A client of a Confluent-compatible schema registry.
//!
//! Only the documented REST API is used (`GET /schemas/ids/{id}`,
//! `GET /subjects/{subject}/versions/{version}`), so Confluent's server,
//! Karapace, Redpanda's registry and Apicurio's compatibility API all serve.
//!
//! Schemas by id are immutable, so they are cached for the life of the
//! process, with one request in flight per id however many readers ask at
//! once. Subjects' versions move, so "latest" is asked again each time (the
//! catalog caches it per refresh interval).
//!
//! Two kinds of failure are kept apart, because they mean different things
//! to a query: the registry answered that a schema does not exist
//! ([`RegistryError::NotFound`]: the message is bad, it becomes an `_error`
//! row) or the registry could not be asked ([`RegistryError::Unavailable`]:
//! the query fails, and no row pretends to know why).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::OnceCell;

/// What a registry lookup can end in.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered: no such schema, subject or version.
    #[error("{0}")]
    NotFound(String),
    /// The registry could not be reached, timed out, refused our credentials
    /// or answered something that is not its API.
    #[error("schema registry {registry} unavailable: {why}")]
    Unavailable {
        /// The registry's base URL (credentials removed).
        registry: String,
        /// What went wrong.
        why: String,
    },
}

/// Why a registered schema could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SchemaError {
    /// The registry could not be asked: not the schema's fault.
    #[error(transparent)]
    Registry(RegistryError),
    /// The schema (or one it references) is not usable.
    #[error("{0}")]
    Invalid(String),
}

/// The kind of a registered schema (`schemaType`; absent means Avro).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchemaType {
    /// An Avro schema in JSON.
    #[default]
    Avro,
    /// A `.proto` file (text, or a base64 `FileDescriptorProto`).
    Protobuf,
    /// A JSON Schema document.
    Json,
}

impl fmt::Display for SchemaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Avro => "AVRO",
            Self::Protobuf => "PROTOBUF",
            Self::Json => "JSON",
        })
    }
}

/// A schema as the registry returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RegisteredSchema {
    /// The schema's id (present in subject-version answers).
    #[serde(default)]
    pub id: Option<u32>,
    /// The subject's version number (subject-version answers only).
    #[serde(default)]
    pub version: Option<u32>,
    /// Its kind.
    #[serde(default, rename = "schemaType")]
    pub schema_type: SchemaType,
    /// The schema text.
    pub schema: String,
    /// Other subjects' schemas this one uses (Protobuf `import`s by the
    /// file name the import uses, Avro named types by their full name);
    /// absent in most answers.
    #[serde(default)]
    pub references: Vec<SchemaReference>,
}

/// A schema's reference to a version of another subject.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SchemaReference {
    /// The name the referring schema uses for it (for Protobuf, the path in
    /// its `import` statement; for Avro, the full name of the type).
    pub name: String,
    /// The subject holding it.
    pub subject: String,
    /// The subject's version.
    pub version: u32,
}

/// How to reach a registry.
#[derive(Clone)]
pub struct RegistryOptions {
    /// Base URL, e.g. `http://registry:8081`.
    pub url: String,
    /// Basic-auth user name and password.
    pub basic_auth: Option<(String, String)>,
    /// PEM file of the CA that signed the registry's certificate (added to
    /// the system's roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// Deadline of one request, connecting included.
    pub timeout: Duration,
}

impl fmt::Debug for RegistryOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryOptions")
            .field("url", &self.url)
            .field("basic_auth", &self.basic_auth.as_ref().map(|(u, _)| u))
            .field("ca_file", &self.ca_file)
            .field("timeout", &self.timeout)
            .finish()
    }
}

type SchemaCell = Arc<OnceCell<Arc<RegisteredSchema>>>;

/// A schema registry client, shared by every table and reader.
pub struct SchemaRegistry {
    base: url::Url,
    shown: String,
    http: reqwest::Client,
    basic_auth: Option<(String, String)>,
    by_id: Mutex<HashMap<u32, SchemaCell>>,
    /// Where blocking callers (the reader threads) run their requests.
    runtime: tokio::runtime::Handle,
    /// Holds only the schemas it was made with and asks nothing ([`Self::fixed`]).
    fixed: bool,
}

impl fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl SchemaRegistry {
    /// A client of the registry at `options.url`. Call within a tokio
    /// runtime: blocking lookups from reader threads run on it.
    pub fn new(options: RegistryOptions) -> Result<Self, String> {
        // The URL may hold credentials: errors never repeat it.
        let mut base =
            url::Url::parse(&options.url).map_err(|e| format!("schema registry URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err("schema registry URL: expected http:// or https://".into());
        }
        // Credentials in the URL work like the flags, and never reach logs.
        let mut basic_auth = options.basic_auth;
        if !base.username().is_empty() || base.password().is_some() {
            let user = percent_decode(base.username());
            let password = base.password().map(percent_decode).unwrap_or_default();
            basic_auth.get_or_insert((user, password));
            let _ = base.set_username("");
            let _ = base.set_password(None);
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout);
        if let Some(ca) = &options.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| format!("schema registry CA {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("schema registry CA {}: {e}", ca.display()))?;
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let http = http
            .build()
            .map_err(|e| format!("schema registry client: {e}"))?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "the schema registry client needs a tokio runtime".to_string())?;
        let shown = base.as_str().trim_end_matches('/').to_string();
        Ok(Self {
            base,
            shown,
            http,
            basic_auth,
            by_id: Mutex::new(HashMap::new()),
            runtime,
            fixed: false,
        })
    }

    /// A registry that holds only `schemas` (by id) and answers every other
    /// lookup "not found" without a request: for tests of what decoders do
    /// with whatever id a value names. Call within a tokio runtime.
    #[cfg(test)]
    pub(crate) fn fixed(schemas: impl IntoIterator<Item = (u32, RegisteredSchema)>) -> Self {
        let mut registry = Self::new(RegistryOptions {
            url: "http://fixed.invalid".into(),
            basic_auth: None,
            ca_file: None,
            timeout: Duration::from_secs(1),
        })
        .expect("a valid URL");
        registry.fixed = true;
        let by_id = registry.by_id.get_mut().expect("registry cache poisoned");
        for (id, schema) in schemas {
            let cell = OnceCell::new_with(Some(Arc::new(schema)));
            by_id.insert(id, Arc::new(cell));
        }
        registry
    }

    /// The registry's URL, without credentials.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// The schema with this id (cached: ids are immutable).
    pub async fn schema_by_id(&self, id: u32) -> Result<Arc<RegisteredSchema>, RegistryError> {
        let cell = {
            let mut by_id = self.by_id.lock().expect("registry cache poisoned");
            Arc::clone(by_id.entry(id).or_default())
        };
        let found = cell
            .get_or_try_init(|| async {
                let mut schema: RegisteredSchema = self.get(&format!("schemas/ids/{id}")).await?;
                schema.id = Some(id);
                Ok(Arc::new(schema))
            })
            .await
            .cloned();
        if found.is_err() {
            // Nothing is kept for an id that was not found.
            let mut by_id = self.by_id.lock().expect("registry cache poisoned");
            if by_id.get(&id).is_some_and(|c| !c.initialized()) {
                by_id.remove(&id);
            }
        }
        found
    }

    /// [`Self::schema_by_id`] for a reader thread (never call it on the
    /// async runtime's own threads).
    pub fn schema_by_id_blocking(&self, id: u32) -> Result<Arc<RegisteredSchema>, RegistryError> {
        self.runtime.block_on(self.schema_by_id(id))
    }

    /// Runs a lookup from a reader thread (never call it on the async
    /// runtime's own threads), on the runtime the client was made in.
    pub fn block_on<F: std::future::Future>(&self, lookup: F) -> F::Output {
        self.runtime.block_on(lookup)
    }

    /// A subject's version (`None`: the latest), with its id.
    pub async fn subject_version(
        &self,
        subject: &str,
        version: Option<u32>,
    ) -> Result<RegisteredSchema, RegistryError> {
        let version = version.map_or_else(|| "latest".to_string(), |v| v.to_string());
        let subject = utf8_percent_encode(subject);
        self.get(&format!("subjects/{subject}/versions/{version}"))
            .await
    }

    /// The schema a reference names (another subject's version), for a
    /// schema being made whole: one the registry does not hold makes the
    /// referring schema unusable, naming the reference.
    pub async fn referenced(
        &self,
        reference: &SchemaReference,
    ) -> Result<RegisteredSchema, SchemaError> {
        match self
            .subject_version(&reference.subject, Some(reference.version))
            .await
        {
            Ok(found) => Ok(found),
            Err(RegistryError::NotFound(why)) => Err(SchemaError::Invalid(format!(
                "reference {} (subject '{}' version {}) is not in the registry: {why}",
                reference.name, reference.subject, reference.version
            ))),
            Err(unavailable) => Err(SchemaError::Registry(unavailable)),
        }
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, RegistryError> {
        if self.fixed {
            return Err(RegistryError::NotFound(format!(
                "{path}: not a fixed schema"
            )));
        }
        let unavailable = |why: String| RegistryError::Unavailable {
            registry: self.shown.clone(),
            why,
        };
        let url = self
            .base
            .join(path)
            .map_err(|e| unavailable(format!("bad path {path}: {e}")))?;
        let mut request = self
            .http
            .get(url)
            .header("Accept", "application/vnd.schemaregistry.v1+json");
        if let Some((user, password)) = &self.basic_auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(describe(&e)))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(describe(&e)))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| unavailable(format!("unexpected answer to GET {path}: {e}")));
        }
        let answer: Option<ErrorAnswer> = serde_json::from_slice(&body).ok();
        match answer {
            // 40401 subject, 40402 version, 40403 schema: the registry's own
            // word that the thing does not exist.
            Some(ErrorAnswer {
                error_code: 40401..=40403,
                message,
            }) if status.as_u16() == 404 => Err(RegistryError::NotFound(message)),
            Some(ErrorAnswer {
                error_code,
                message,
            }) => Err(unavailable(format!(
                "GET {path}: HTTP {status}, error {error_code}: {message}"
            ))),
            None => Err(unavailable(format!("GET {path}: HTTP {status}"))),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    error_code: u32,
    #[serde(default)]
    message: String,
}

/// reqwest's error and its causes, in one line.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_string()
    } else if error.is_connect() {
        "cannot connect".to_string()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Undoes the URL's percent-encoding of a user name or password (`%40` is
/// `@`); anything that is not a valid escape stays as it is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn utf8_percent_encode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_are_unescaped() {
        assert_eq!(percent_decode("p%40ss%2Bw+rd"), "p@ss+w+rd");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn references_are_read_and_default_to_none() {
        let answer = r#"{"subject": "orders-value", "version": 2, "id": 7,
            "schemaType": "PROTOBUF", "schema": "syntax = \"proto3\";",
            "references": [{"name": "shop/common.proto", "subject": "shop/common.proto", "version": 1}]}"#;
        let found: RegisteredSchema = serde_json::from_str(answer).unwrap();
        assert_eq!(found.schema_type, SchemaType::Protobuf);
        assert_eq!(
            found.references,
            [SchemaReference {
                name: "shop/common.proto".into(),
                subject: "shop/common.proto".into(),
                version: 1
            }]
        );
        let avro: RegisteredSchema = serde_json::from_str(r#"{"schema": "\"long\""}"#).unwrap();
        assert!(avro.references.is_empty() && avro.schema_type == SchemaType::Avro);
    }

    #[tokio::test]
    async fn the_url_loses_its_credentials_and_keeps_its_path() {
        let registry = SchemaRegistry::new(RegistryOptions {
            url: "https://user:p%40ss@registry.example:8081/ccompat/v7".into(),
            basic_auth: None,
            ca_file: None,
            timeout: Duration::from_secs(1),
        })
        .unwrap();
        assert_eq!(registry.url(), "https://registry.example:8081/ccompat/v7");
        assert_eq!(
            registry.basic_auth,
            Some(("user".to_string(), "p@ss".to_string()))
        );
        assert!(!format!("{registry:?}").contains("p@ss"));
        let refused = SchemaRegistry::new(RegistryOptions {
            url: "ftp://registry".into(),
            basic_auth: None,
            ca_file: None,
            timeout: Duration::from_secs(1),
        });
        assert!(refused.unwrap_err().contains("http"));
    }
}
