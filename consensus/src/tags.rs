//! The one rule for tags: what a node may carry (`--tag`, `cathedral node tag set`) and what
//! a job may require (`constraints`). Both sides check here, so a job never asks for a tag
//! no node could have.

/// Most operator tags on one node (`available` not counted).
pub const TAGS_MAX: usize = 32;
/// Longest tag key.
pub const TAG_KEY_BYTES_MAX: usize = 64;
/// Longest tag value.
pub const TAG_VALUE_BYTES_MAX: usize = 256;

/// Checks a tag key: 1..=`TAG_KEY_BYTES_MAX` bytes of letters, digits and `_ - . /`.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > TAG_KEY_BYTES_MAX {
        return Err(format!(
            "tag key {key:?} must be 1..={TAG_KEY_BYTES_MAX} bytes (TAG_KEY_BYTES_MAX)"
        ));
    }
    if !key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
    {
        return Err(format!(
            "tag key {key:?} may hold only letters, digits and _ - . /"
        ));
    }
    Ok(())
}

/// Checks the value of tag `key`: at most `TAG_VALUE_BYTES_MAX` bytes, no NUL.
pub fn check_value(key: &str, value: &str) -> Result<(), String> {
    if value.len() > TAG_VALUE_BYTES_MAX {
        return Err(format!(
            "value of tag {key:?} is {} bytes, more than TAG_VALUE_BYTES_MAX ({TAG_VALUE_BYTES_MAX})",
            value.len()
        ));
    }
    if value.contains('\0') {
        return Err(format!("value of tag {key:?} must not contain NUL"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        check_key("zone").unwrap();
        check_key("a.b/c-d_e9").unwrap();
        assert!(check_key("").unwrap_err().contains("TAG_KEY_BYTES_MAX"));
        assert!(check_key(&"k".repeat(65))
            .unwrap_err()
            .contains("TAG_KEY_BYTES_MAX"));
        check_key(&"k".repeat(64)).unwrap();
        assert!(check_key("a b").unwrap_err().contains("letters"));
        assert!(check_key("é").unwrap_err().contains("letters"));
        check_value("zone", &"v".repeat(256)).unwrap();
        assert!(check_value("zone", &"v".repeat(257))
            .unwrap_err()
            .contains("TAG_VALUE_BYTES_MAX"));
        assert!(check_value("zone", "a\0b").is_err());
    }
}
