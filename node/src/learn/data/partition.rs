//! Splitting a dataset into N parts for N contributors: IID, non-IID by label (each part holds
//! k digits) and Dirichlet(alpha) label skew. All are deterministic for a given seed, every
//! image lands in exactly one part, and the result is a list of index lists into the dataset.

use std::{fmt, str::FromStr};

use rand::{SeedableRng, rngs::StdRng, seq::SliceRandom};
use rand_distr::{Distribution, Gamma};
use serde::{Deserialize, Serialize};

use super::{DataError, NUM_CLASSES};

/// Most parts a dataset may be split into.
pub const MAX_PARTS: usize = 100_000;

/// How images are dealt out to parts. Parsed from `iid`, `labels:K` or `dirichlet:ALPHA`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Shuffled, then cut into near-equal parts.
    Iid,
    /// Each part holds `k` distinct digits (chosen so that all digits are covered when
    /// `parts * k >= 10`); each digit's images are shared equally among the parts holding it.
    Labels {
        /// Digits per part, 1 to 10.
        k: usize,
    },
    /// For each digit, the share of each part is drawn from Dirichlet(alpha): small alpha
    /// (0.1) is very skewed, large alpha (100) is close to IID.
    Dirichlet {
        /// Concentration, > 0.
        alpha: f64,
    },
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scheme::Iid => f.write_str("iid"),
            Scheme::Labels { k } => write!(f, "labels:{k}"),
            Scheme::Dirichlet { alpha } => write!(f, "dirichlet:{alpha}"),
        }
    }
}

impl FromStr for Scheme {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            DataError::Invalid(format!(
                "bad partition scheme {s:?}: expected iid, labels:K (1-10) or dirichlet:ALPHA (> 0)"
            ))
        };
        let scheme = match s.split_once(':') {
            None if s == "iid" => Scheme::Iid,
            Some(("labels", k)) => Scheme::Labels {
                k: k.parse().map_err(|_| bad())?,
            },
            Some(("dirichlet", a)) => Scheme::Dirichlet {
                alpha: a.parse().map_err(|_| bad())?,
            },
            _ => return Err(bad()),
        };
        scheme.check().map_err(|_| bad())?;
        Ok(scheme)
    }
}

impl Scheme {
    fn check(&self) -> Result<(), DataError> {
        match *self {
            Scheme::Labels { k } if k == 0 || k > NUM_CLASSES => Err(DataError::Invalid(format!(
                "labels:{k}: k must be 1 to {NUM_CLASSES}"
            ))),
            Scheme::Dirichlet { alpha } if !(alpha > 0.0 && alpha.is_finite()) => Err(
                DataError::Invalid(format!("dirichlet:{alpha}: alpha must be positive")),
            ),
            _ => Ok(()),
        }
    }
}

/// Deals the indices of `labels` into `parts` lists according to `scheme`, deterministically
/// for `seed`. Every index appears in exactly one list; lists may be empty under heavy skew.
pub fn partition(
    labels: &[u8],
    parts: usize,
    scheme: Scheme,
    seed: u64,
) -> Result<Vec<Vec<usize>>, DataError> {
    if parts == 0 || parts > MAX_PARTS {
        return Err(DataError::Invalid(format!(
            "cannot partition into {parts} parts (1 to {MAX_PARTS})"
        )));
    }
    scheme.check()?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = vec![Vec::new(); parts];
    match scheme {
        Scheme::Iid => {
            let mut all: Vec<usize> = (0..labels.len()).collect();
            all.shuffle(&mut rng);
            let (base, extra) = (all.len() / parts, all.len() % parts);
            let mut start = 0;
            for (p, part) in out.iter_mut().enumerate() {
                let end = start + base + usize::from(p < extra);
                part.extend_from_slice(&all[start..end]);
                start = end;
            }
        }
        Scheme::Labels { k } => {
            let mut digits: Vec<usize> = (0..NUM_CLASSES).collect();
            digits.shuffle(&mut rng);
            // holders[d] = parts holding digit d; consecutive windows of the shuffled digits.
            let mut holders = vec![Vec::new(); NUM_CLASSES];
            for p in 0..parts {
                for j in 0..k {
                    holders[digits[(p * k + j) % NUM_CLASSES]].push(p);
                }
            }
            for (digit, by_digit) in by_label(labels, &mut rng).into_iter().enumerate() {
                let holders = &holders[digit];
                if holders.is_empty() {
                    continue; // fewer than 10 digits in use: parts * k < 10
                }
                let (base, extra) = (
                    by_digit.len() / holders.len(),
                    by_digit.len() % holders.len(),
                );
                let mut start = 0;
                for (h, &p) in holders.iter().enumerate() {
                    let end = start + base + usize::from(h < extra);
                    out[p].extend_from_slice(&by_digit[start..end]);
                    start = end;
                }
            }
        }
        Scheme::Dirichlet { alpha } => {
            let gamma = Gamma::new(alpha, 1.0)
                .map_err(|e| DataError::Invalid(format!("dirichlet:{alpha}: {e}")))?;
            for by_digit in by_label(labels, &mut rng) {
                let draws: Vec<f64> = (0..parts).map(|_| gamma.sample(&mut rng)).collect();
                let total: f64 = draws.iter().sum();
                // Cumulative cut points; with total == 0 (alpha tiny, all draws underflow)
                // everything goes to the last part rather than dividing by zero.
                let mut cum = 0.0;
                let mut start = 0;
                for (p, d) in draws.iter().enumerate() {
                    cum += d;
                    let end = if p + 1 == parts || total <= 0.0 {
                        if p + 1 == parts {
                            by_digit.len()
                        } else {
                            start
                        }
                    } else {
                        ((cum / total) * by_digit.len() as f64).round() as usize
                    }
                    .clamp(start, by_digit.len());
                    out[p].extend_from_slice(&by_digit[start..end]);
                    start = end;
                }
            }
        }
    }
    // Within each part, mix the digits so that a plain sequential read is not sorted by label.
    for part in &mut out {
        part.shuffle(&mut rng);
    }
    Ok(out)
}

/// Indices grouped by label, each group shuffled.
fn by_label(labels: &[u8], rng: &mut StdRng) -> Vec<Vec<usize>> {
    let mut groups = vec![Vec::new(); NUM_CLASSES];
    for (i, &l) in labels.iter().enumerate() {
        if let Some(g) = groups.get_mut(usize::from(l)) {
            g.push(i);
        }
    }
    for g in &mut groups {
        g.shuffle(rng);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 7) % 10) as u8).collect()
    }

    fn assert_exact_cover(parts: &[Vec<usize>], n: usize) {
        let mut all: Vec<usize> = parts.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
    }

    fn digits_of(part: &[usize], labels: &[u8]) -> std::collections::BTreeSet<u8> {
        part.iter().map(|&i| labels[i]).collect()
    }

    #[test]
    fn iid_is_balanced_and_seeded() {
        let l = labels(1003);
        let a = partition(&l, 4, Scheme::Iid, 1).unwrap();
        assert_exact_cover(&a, 1003);
        assert!(a.iter().all(|p| p.len() == 250 || p.len() == 251));
        assert_eq!(a, partition(&l, 4, Scheme::Iid, 1).unwrap());
        assert_ne!(a, partition(&l, 4, Scheme::Iid, 2).unwrap());
    }

    #[test]
    fn labels_scheme_gives_k_digits_per_part() {
        let l = labels(1000);
        let parts = partition(&l, 5, Scheme::Labels { k: 2 }, 3).unwrap();
        assert_exact_cover(&parts, 1000);
        for p in &parts {
            assert_eq!(digits_of(p, &l).len(), 2);
        }
    }

    #[test]
    fn dirichlet_covers_and_skews() {
        let l = labels(2000);
        let skewed = partition(&l, 4, Scheme::Dirichlet { alpha: 0.1 }, 9).unwrap();
        assert_exact_cover(&skewed, 2000);
        let flat = partition(&l, 4, Scheme::Dirichlet { alpha: 1000.0 }, 9).unwrap();
        assert_exact_cover(&flat, 2000);
        // Near-IID: every part holds every digit and about a quarter of the data.
        for p in &flat {
            assert_eq!(digits_of(p, &l).len(), 10);
            assert!((400..=600).contains(&p.len()), "{}", p.len());
        }
        // Skewed: some part misses at least one digit.
        assert!(skewed.iter().any(|p| digits_of(p, &l).len() < 10));
    }

    #[test]
    fn scheme_parse_round_trip_and_errors() {
        for s in ["iid", "labels:2", "dirichlet:0.5"] {
            assert_eq!(s.parse::<Scheme>().unwrap().to_string(), s);
        }
        for s in [
            "",
            "labels:0",
            "labels:11",
            "dirichlet:-1",
            "dirichlet:x",
            "foo:1",
        ] {
            assert!(s.parse::<Scheme>().is_err(), "{s}");
        }
        assert!(partition(&[1, 2], 0, Scheme::Iid, 0).is_err());
        assert!(partition(&[1, 2], MAX_PARTS + 1, Scheme::Iid, 0).is_err());
    }
}
