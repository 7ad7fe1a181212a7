//! blockflow kernels: pure functions over ndarray arrays and views.
//!
//! A kernel never sees a channel, a file or a thread pool; the runtime
//! calls it once per chunk.

pub mod expr;
pub mod filters;
pub mod linalg;
pub mod ops;
pub mod rank;
pub mod reduce;
pub mod register;
pub mod rescale;
pub mod shift;
pub mod simd;
pub mod tensor;
pub mod zscore;

pub use expr::{Expr, ExprError, InputInfo};

/// The candidate closest to `word` by edit distance, if it is close enough
/// to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = levenshtein(word, c);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.filter(|(d, c)| *d <= (c.len().max(word.len()) / 3).max(1))
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + (ca != cb) as usize)
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn suggestions() {
        assert_eq!(
            super::did_you_mean("grads", ["grad", "smooth"]),
            Some("grad")
        );
        assert_eq!(super::did_you_mean("zzzzzz", ["grad", "smooth"]), None);
    }
}
