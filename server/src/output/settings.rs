//! How much output a node keeps, and for how long ([`OutputSettings`]), with the
//! defaults of its flags: what the configuration resolves into, apart from the code that
//! reads and streams output.

/// Default output kept per attempt.
pub const OUTPUT_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// Default output kept on a node in all; the oldest goes first.
pub const OUTPUT_BYTES_TOTAL_MAX_DEFAULT: u64 = 1 << 30;
/// Default age past which output is deleted.
pub const OUTPUT_RETENTION_HOURS_DEFAULT: u64 = 168;

/// How much output this node keeps, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSettings {
    /// Per attempt (the executor stops writing past it).
    pub bytes_max: u64,
    /// On this node in all; retention deletes the oldest first.
    pub bytes_total_max: u64,
    pub retention_hours: u64,
}

impl Default for OutputSettings {
    fn default() -> Self {
        OutputSettings {
            bytes_max: OUTPUT_BYTES_MAX_DEFAULT,
            bytes_total_max: OUTPUT_BYTES_TOTAL_MAX_DEFAULT,
            retention_hours: OUTPUT_RETENTION_HOURS_DEFAULT,
        }
    }
}
