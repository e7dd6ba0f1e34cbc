//! ratls
