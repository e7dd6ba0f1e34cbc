//! AMD SEV-SNP: the report layout, AMD anchors and certificate extensions, verification.

pub mod amd;
pub mod report;
pub mod verify;

pub use report::{GuestPolicy, Product, SigningKey, SnpReport, Tcb};
