//! simulated
pub const DEV_ARK_SHA256: &str = "";
