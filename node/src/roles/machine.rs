//! What this machine offers on the marketplace: CPU cores (the parallelism the OS grants this
//! process), memory (`MemTotal` of `/proc/meminfo`) and GPUs (`nvidia-smi
//! --query-gpu=name --format=csv,noheader`, when it is installed). The parsers are pure and
//! tested; [`detect`] does the reading.

use std::{process::Stdio, time::Duration};

use serde::{Deserialize, Serialize};

/// How long `nvidia-smi` may take before the machine counts as GPU-less.
const NVIDIA_SMI_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest GPU model string kept (the contract caps strings at 256 bytes).
const MAX_GPU_MODEL_BYTES: usize = 200;

/// A machine's hardware as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Specs {
    /// CPU cores.
    pub cpu_cores: u32,
    /// Memory, MiB.
    pub ram_mb: u32,
    /// GPU model ("" when none).
    pub gpu_model: String,
    /// GPUs.
    pub gpu_count: u32,
}

/// `MemTotal` of a `/proc/meminfo` text, in MiB.
pub fn parse_meminfo(text: &str) -> Option<u32> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    let kib = match parts.next() {
        Some("kB") | None => value,
        Some("mB" | "MB") => value.saturating_mul(1024),
        Some(_) => return None,
    };
    u32::try_from(kib / 1024).ok()
}

/// The model and count of `nvidia-smi --query-gpu=name --format=csv,noheader` output (one
/// name a line); `None` when it lists no GPU. With mixed models, the first one is named.
pub fn parse_gpu_names(text: &str) -> Option<(String, u32)> {
    let names: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let first = names.first()?;
    let mut model = (*first).to_owned();
    if model.len() > MAX_GPU_MODEL_BYTES {
        let mut cut = MAX_GPU_MODEL_BYTES;
        while !model.is_char_boundary(cut) {
            cut -= 1;
        }
        model.truncate(cut);
    }
    Some((model, u32::try_from(names.len()).unwrap_or(u32::MAX)))
}

/// CPU cores available to this process.
pub fn cpu_cores() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// Memory in MiB from `/proc/meminfo` (1 when unreadable: the contract wants non-zero).
pub fn ram_mb() -> u32 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t))
        .filter(|m| *m > 0)
        .unwrap_or(1)
}

/// GPUs according to `nvidia-smi`; `None` when it is missing, fails or lists none.
pub async fn gpus() -> Option<(String, u32)> {
    let child = tokio::process::Command::new("nvidia-smi")
        .args(["--query-gpu=name", "--format=csv,noheader"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let out = tokio::time::timeout(NVIDIA_SMI_TIMEOUT, child.wait_with_output())
        .await
        .ok()?
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_gpu_names(&String::from_utf8_lossy(&out.stdout))
}

/// This machine's specs.
pub async fn detect() -> Specs {
    let (gpu_model, gpu_count) = gpus().await.unwrap_or_default();
    Specs {
        cpu_cores: cpu_cores(),
        ram_mb: ram_mb(),
        gpu_model,
        gpu_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_in_mib() {
        let text = "MemTotal:       24575332 kB\nMemFree:        1000 kB\n";
        assert_eq!(parse_meminfo(text), Some(23_999));
        assert_eq!(parse_meminfo("MemFree: 5 kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: lots kB\n"), None);
        assert_eq!(parse_meminfo("MemTotal: 5 GB\n"), None);
    }

    #[test]
    fn gpu_names_counted() {
        let text = "NVIDIA H100 80GB HBM3\nNVIDIA H100 80GB HBM3\n\n";
        assert_eq!(
            parse_gpu_names(text),
            Some(("NVIDIA H100 80GB HBM3".to_owned(), 2))
        );
        assert_eq!(parse_gpu_names(""), None);
        assert_eq!(parse_gpu_names("  \n"), None);
    }

    #[test]
    fn gpu_model_is_capped_on_a_char_boundary() {
        let long = "é".repeat(150);
        let (model, n) = parse_gpu_names(&long).unwrap();
        assert!(model.len() <= MAX_GPU_MODEL_BYTES);
        assert_eq!(n, 1);
    }

    #[test]
    fn this_machine_has_cores_and_memory() {
        assert!(cpu_cores() >= 1);
        assert!(ram_mb() >= 1);
    }
}
