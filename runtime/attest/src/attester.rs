//! attester
