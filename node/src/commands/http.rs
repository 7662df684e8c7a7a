//! The HTTP client the API commands (`blob`, `job`, `infer`) talk to a node with. A node
//! trusts clients on its own machine; a client elsewhere sends the node's API token, taken
//! from `QUACKMESH_API_TOKEN` (the token) or `QUACKMESH_API_TOKEN_FILE` (the node's
//! `api-token` file).

use std::time::Duration;

use anyhow::Context;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

pub(crate) fn api_client() -> anyhow::Result<reqwest::Client> {
    let mut headers = HeaderMap::new();
    if let Some(token) = token()? {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the API token has characters a header cannot carry")?;
        value.set_sensitive(true);
        headers.insert(AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()?)
}

fn token() -> anyhow::Result<Option<String>> {
    if let Ok(t) = std::env::var("QUACKMESH_API_TOKEN") {
        return Ok(Some(t.trim().to_owned()).filter(|t| !t.is_empty()));
    }
    match std::env::var_os("QUACKMESH_API_TOKEN_FILE") {
        Some(path) => {
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("cannot read the API token file {}", path.to_string_lossy())
            })?;
            Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
        }
        None => Ok(None),
    }
}
