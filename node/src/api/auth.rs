//! Who may use the HTTP API. The API can spend the node's wallet (jobs, inference) and serve
//! cluster-private bytes, so a node whose API listens beyond loopback (a container, an EC2
//! host) must not obey whoever reaches the port. Clients on loopback are the node's own
//! machine and are trusted, as before; any other client must send `Authorization: Bearer
//! TOKEN` to change anything (every method but GET and HEAD) or to read bytes that may be
//! private (blob contents, inference outputs). The rest (dashboard, metrics, status views
//! that mirror the chain) stays readable, so a dashboard works from anywhere.
//!
//! The token lives in a file (`<data_dir>/api-token`, mode 0600, or `--api-token-file`),
//! created with 32 random bytes when missing, as bitcoind's RPC cookie is.

use std::{
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use rand::RngCore;

/// Longest token file read.
const MAX_TOKEN_BYTES: usize = 1024;
/// Random bytes in a created token (hex encoded).
const TOKEN_BYTES: usize = 32;

/// Why the token could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file exists but is unusable.
    #[error("API token file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The token clients beyond loopback must present.
#[derive(Clone)]
pub struct ApiToken(Arc<str>);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

impl ApiToken {
    /// A token with this text (tests, and [`Self::load_or_create`]).
    pub fn new(text: &str) -> Self {
        Self(text.into())
    }

    /// Reads the token from `path`, or creates the file with a random token (0600).
    pub fn load_or_create(path: &Path) -> Result<Self, AuthError> {
        let err = |reason: String| AuthError::File {
            path: path.to_owned(),
            reason,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                if bytes.len() > MAX_TOKEN_BYTES {
                    return Err(err(format!("longer than {MAX_TOKEN_BYTES} bytes")));
                }
                let text = String::from_utf8(bytes).map_err(|_| err("not UTF-8".into()))?;
                let token = text.trim();
                if token.len() < 16 {
                    return Err(err("the token must be at least 16 characters".into()));
                }
                Ok(Self::new(token))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = [0u8; TOKEN_BYTES];
                rand::rng().fill_bytes(&mut raw);
                let token = hex::encode(raw);
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
                }
                let mut file = open_private(path).map_err(|e| err(e.to_string()))?;
                file.write_all(token.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| err(e.to_string()))?;
                Ok(Self::new(&token))
            }
            Err(e) => Err(err(e.to_string())),
        }
    }

    /// Whether `presented` is the token (in time independent of where they differ).
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(unix)]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn open_private(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Whether a request needs the token when it does not come from loopback.
pub fn needs_token(method: &Method, path: &str) -> bool {
    if method != Method::GET && method != Method::HEAD {
        return true;
    }
    // Bytes that may be cluster-private: a blob's contents, an inference job's predictions.
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    matches!(parts.as_slice(), ["", "api", "blob", _])
        || matches!(parts.as_slice(), ["", "api", "infer", _, "output"])
}

/// The middleware: lets loopback clients and token holders through, refuses the rest of the
/// requests that [`needs_token`] names with 401.
pub async fn require_token(State(token): State<ApiToken>, req: Request, next: Next) -> Response {
    let from_loopback = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .is_some_and(|ConnectInfo(addr)| addr.ip().to_canonical().is_loopback());
    if from_loopback || !needs_token(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p) if token.matches(p.trim()) => next.run(req).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({
                "error": "this request needs the node's API token (Authorization: Bearer TOKEN; \
                          the token is in the node's api-token file)"
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("api-token");
        let a = ApiToken::load_or_create(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 2 * TOKEN_BYTES);
        assert!(a.matches(&text));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = ApiToken::load_or_create(&path).unwrap();
        assert!(b.matches(&text), "the same token after a restart");
        assert!(!b.matches(&text[1..]));
        assert!(!b.matches(""));
    }

    #[test]
    fn bad_token_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        assert!(ApiToken::load_or_create(&short).is_err());
        let long = dir.path().join("long");
        std::fs::write(&long, vec![b'a'; MAX_TOKEN_BYTES + 1]).unwrap();
        assert!(ApiToken::load_or_create(&long).is_err());
        let given = dir.path().join("given");
        std::fs::write(&given, "  a-token-chosen-by-the-operator\n").unwrap();
        let t = ApiToken::load_or_create(&given).unwrap();
        assert!(t.matches("a-token-chosen-by-the-operator"));
    }

    async fn status(
        app: &axum::Router,
        method: Method,
        path: &str,
        from: [u8; 4],
        auth: Option<&str>,
    ) -> StatusCode {
        use tower::ServiceExt;
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let mut req = req.body(axum::body::Body::empty()).unwrap();
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::from((from, 40000))));
        app.clone().oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn strangers_need_the_token_loopback_does_not() {
        use axum::routing::get;
        let token = ApiToken::new("0123456789abcdef0123");
        let app = axum::Router::new()
            .route(
                "/api/job",
                get(|| async { "view" }).post(|| async { "spent" }),
            )
            .layer(axum::middleware::from_fn_with_state(token, require_token));
        let (lan, lo) = ([10, 1, 2, 3], [127, 0, 0, 1]);
        assert_eq!(
            status(&app, Method::POST, "/api/job", lan, None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(
                &app,
                Method::POST,
                "/api/job",
                lan,
                Some("Bearer wrong-token-000000")
            )
            .await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(
                &app,
                Method::POST,
                "/api/job",
                lan,
                Some("Bearer 0123456789abcdef0123")
            )
            .await,
            StatusCode::OK
        );
        assert_eq!(
            status(&app, Method::POST, "/api/job", lo, None).await,
            StatusCode::OK
        );
        assert_eq!(
            status(&app, Method::GET, "/api/job", lan, None).await,
            StatusCode::OK
        );
    }

    #[test]
    fn writes_and_private_bytes_need_the_token_views_do_not() {
        for (m, p) in [
            (Method::POST, "/api/job"),
            (Method::POST, "/api/blob"),
            (Method::PUT, "/api/blob/abc/access"),
            (Method::DELETE, "/api/anything"),
            (Method::GET, "/api/blob/abc"),
            (Method::GET, "/api/blob/abc/"),
            (Method::GET, "/api/infer/7/output"),
        ] {
            assert!(needs_token(&m, p), "{m} {p}");
        }
        for p in [
            "/",
            "/metrics",
            "/api/node",
            "/api/blobs",
            "/api/blob/abc/status",
            "/api/job/3",
            "/api/infer/7",
            "/api/market",
        ] {
            assert!(!needs_token(&Method::GET, p), "{p}");
        }
    }
}
