//! The one check of the string fields every service API takes (ids, usernames):
//! present, and at most [`MAX_FIELD_BYTES`]. Each service turns the message into
//! its own `InvalidArgument` error.

/// Longest id or username accepted, in bytes.
pub const MAX_FIELD_BYTES: usize = 128;

/// Checks a required string field; the error says which field and why.
pub fn require(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if value.len() > MAX_FIELD_BYTES {
        return Err(format!("{field} is longer than {MAX_FIELD_BYTES} bytes"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_present_and_bounded() {
        assert!(require("id", "u").is_ok());
        assert!(require("id", &"x".repeat(MAX_FIELD_BYTES)).is_ok());
        assert_eq!(require("id", ""), Err("id must not be empty".to_owned()));
        assert_eq!(
            require("id", &"x".repeat(MAX_FIELD_BYTES + 1)),
            Err("id is longer than 128 bytes".to_owned())
        );
    }
}
