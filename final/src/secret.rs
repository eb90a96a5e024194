//! Comparing secrets: the bearer token a client presents with the
//! gateway's.

/// Compares a presented token with the expected one in a time that does
/// not depend on where they first differ, so that timing the answers does
/// not reveal the token byte by byte. (`==` on strings stops at the first
/// byte that differs.)
pub fn same_secret(presented: &str, expected: &str) -> bool {
    let (presented, expected) = (presented.as_bytes(), expected.as_bytes());
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn a_token_is_the_same_only_when_every_byte_is() {
        assert!(same_secret("demo-token", "demo-token"));
        assert!(!same_secret("demo-tokeN", "demo-token"));
        assert!(!same_secret("demo-token-", "demo-token"));
        assert!(!same_secret("", "demo-token"));
    }
}
