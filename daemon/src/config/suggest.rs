//! "Did you mean …?": the known word nearest to a misspelt one, by edit distance (insertions,
//! deletions, substitutions and swaps of two neighbours, as a typo makes them).

/// The word of `known` nearest to `typed`, if one is near enough to be what was meant: at most
/// one edit for words up to 4 letters, two up to 8, three beyond.
pub(super) fn nearest(typed: &str, known: &[&'static str]) -> Option<&'static str> {
    let typed = typed.to_ascii_lowercase();
    let limit = match typed.chars().count() {
        0..=4 => 1,
        5..=8 => 2,
        _ => 3,
    };
    known
        .iter()
        .map(|k| (distance(&typed, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance between `a` and `b`.
#[expect(
    clippy::many_single_char_names,
    reason = "the textbook names of the edit-distance recurrence"
)]
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0_usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[n][m]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_the_key_meant_and_strangers_find_none() {
        let group = &["name", "weight", "backends"];
        assert_eq!(nearest("wieght", group), Some("weight"));
        assert_eq!(nearest("weigth", group), Some("weight"));
        assert_eq!(nearest("Weight", group), Some("weight"));
        assert_eq!(nearest("backend", group), Some("backends"));
        assert_eq!(nearest("nmae", group), Some("name"));
        assert_eq!(nearest("colour", group), None);
        assert_eq!(nearest("x", group), None);
        assert_eq!(
            nearest("max_failure", &["max_failure_rate", "min_flows"]),
            None
        );
        assert_eq!(nearest("tpc", &["tcp", "udp"]), Some("tcp"));
    }
}
