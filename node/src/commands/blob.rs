//! `quackmesh blob put|get|status`: talk to a running node's HTTP API. `get` recomputes the
//! blob id from the bytes it receives and refuses to keep a file that does not match.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use quackmesh::{
    api::blob::{CHUNK_BYTES_HEADER, PutResponse},
    hash::Hash32,
    mesh::blob::{CHUNK_BYTES, MAX_CHUNK_BYTES, Manifest, manifest::MANIFEST_VERSION},
};

use crate::cli::blob::{BlobArgs, BlobCommand};

pub(crate) async fn run(args: BlobArgs) -> anyhow::Result<()> {
    let http = super::http::api_client()?;
    match args.command {
        BlobCommand::Put {
            file,
            private,
            node,
        } => put(&http, &file, private, &node).await,
        BlobCommand::Get {
            hash,
            output,
            from,
            node,
        } => get(&http, &hash, &output, &from, &node).await,
        BlobCommand::Fetch { hash, from, node } => fetch(&http, &hash, &from, &node).await,
        BlobCommand::Status { hash, node } => status(&http, &hash, &node).await,
    }
}

async fn error_text(resp: reqwest::Response) -> String {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or(body);
    format!("{status}: {msg}")
}

async fn put(http: &reqwest::Client, file: &Path, private: bool, node: &str) -> anyhow::Result<()> {
    let data = tokio::fs::read(file)
        .await
        .with_context(|| format!("cannot read {}", file.display()))?;
    let query = if private { "?private=true" } else { "" };
    let url = format!("{}/api/blob{query}", node.trim_end_matches('/'));
    let resp = http
        .post(&url)
        .body(data)
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {node}"))?;
    if !resp.status().is_success() {
        bail!("upload failed: {}", error_text(resp).await);
    }
    let put: PutResponse = resp.json().await.context("bad answer from the node")?;
    println!("{}", put.id);
    Ok(())
}

/// Hashes chunks as bytes stream in, to rebuild the manifest (and so the id) at the end.
struct ChunkHasher {
    chunk_bytes: usize,
    current: Vec<u8>,
    chunks: Vec<Hash32>,
    len: u64,
}

impl ChunkHasher {
    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        while !data.is_empty() {
            let take = (self.chunk_bytes - self.current.len()).min(data.len());
            self.current.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.current.len() == self.chunk_bytes {
                self.chunks.push(Hash32::of(&self.current));
                self.current.clear();
            }
        }
    }

    fn id(mut self) -> anyhow::Result<Hash32> {
        if !self.current.is_empty() {
            self.chunks.push(Hash32::of(&self.current));
        }
        let manifest = Manifest {
            v: MANIFEST_VERSION,
            len: self.len,
            chunk_bytes: self.chunk_bytes as u32,
            chunks: self.chunks,
        };
        Ok(manifest.id()?)
    }
}

async fn get(
    http: &reqwest::Client,
    hash: &str,
    output: &Path,
    from: &[String],
    node: &str,
) -> anyhow::Result<()> {
    let id: Hash32 = hash.parse()?;
    let mut url = format!("{}/api/blob/{id}", node.trim_end_matches('/'));
    if !from.is_empty() {
        url.push_str(&format!("?from={}", from.join(",")));
    }
    let mut resp = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {node}"))?;
    if !resp.status().is_success() {
        bail!("fetch failed: {}", error_text(resp).await);
    }
    let chunk_bytes = resp
        .headers()
        .get(CHUNK_BYTES_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(CHUNK_BYTES);
    if chunk_bytes == 0 || chunk_bytes > MAX_CHUNK_BYTES {
        bail!("node reports an invalid chunk size {chunk_bytes}");
    }
    let part: PathBuf = {
        let mut p = output.as_os_str().to_owned();
        p.push(".part");
        p.into()
    };
    let mut file = std::fs::File::create(&part)
        .with_context(|| format!("cannot create {}", part.display()))?;
    let mut hasher = ChunkHasher {
        chunk_bytes,
        current: Vec::with_capacity(chunk_bytes),
        chunks: Vec::new(),
        len: 0,
    };
    while let Some(bytes) = resp.chunk().await.context("download interrupted")? {
        hasher.update(&bytes);
        file.write_all(&bytes)?;
    }
    file.sync_all()?;
    drop(file);
    let len = hasher.len;
    let got = hasher.id()?;
    if got != id {
        let _ = std::fs::remove_file(&part);
        bail!("received bytes hash to blob {got}, not {id}; nothing written");
    }
    std::fs::rename(&part, output).with_context(|| format!("cannot write {}", output.display()))?;
    eprintln!("wrote {} ({len} bytes, blob {id})", output.display());
    Ok(())
}

async fn fetch(
    http: &reqwest::Client,
    hash: &str,
    from: &[String],
    node: &str,
) -> anyhow::Result<()> {
    let id: Hash32 = hash.parse()?;
    let mut url = format!(
        "{}/api/blob/{id}/fetch?wait=true",
        node.trim_end_matches('/')
    );
    if !from.is_empty() {
        url.push_str(&format!("&from={}", from.join(",")));
    }
    let resp = http
        .post(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {node}"))?;
    if !resp.status().is_success() {
        bail!("fetch failed: {}", error_text(resp).await);
    }
    let v: serde_json::Value = resp.json().await?;
    println!("{}", serde_json::to_string(&v["report"])?);
    Ok(())
}

async fn status(http: &reqwest::Client, hash: &str, node: &str) -> anyhow::Result<()> {
    let id: Hash32 = hash.parse()?;
    let url = format!("{}/api/blob/{id}/status", node.trim_end_matches('/'));
    let resp = http
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach the node at {node}"))?;
    if !resp.status().is_success() {
        bail!("status failed: {}", error_text(resp).await);
    }
    let v: serde_json::Value = resp.json().await?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
