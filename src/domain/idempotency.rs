//! Idempotency keys: a client names a create or a report with a key of its
//! choosing, so that resending it after a lost answer stores it once and
//! answers what the first attempt answered.

use super::{AppError, AppResult};

/// The longest key accepted, in bytes (Stripe's limit).
pub const MAX_KEY_BYTES: usize = 255;

/// A validated key: 1 to [`MAX_KEY_BYTES`] visible ASCII characters (no
/// spaces or control characters), so it travels unchanged in an HTTP header
/// and in gRPC metadata and prints safely in an error message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> AppResult<Self> {
        if raw.is_empty() || raw.len() > MAX_KEY_BYTES {
            return Err(AppError::invalid(format!(
                "the idempotency key has {} bytes; it must have 1 to {MAX_KEY_BYTES}",
                raw.len()
            )));
        }
        if let Some(c) = raw.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(AppError::invalid(format!(
                "the idempotency key may only hold visible ASCII characters (no spaces); found {:?}",
                c
            )));
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        assert_eq!(IdempotencyKey::parse("retry-7f3a_01:x").unwrap().as_str(), "retry-7f3a_01:x");
        assert!(IdempotencyKey::parse(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        for bad in [String::new(), "k".repeat(MAX_KEY_BYTES + 1), "a b".into(), "é".into(), "a\tb".into()] {
            assert!(matches!(IdempotencyKey::parse(&bad), Err(AppError::InvalidArgument(_))), "{bad:?}");
        }
    }
}
