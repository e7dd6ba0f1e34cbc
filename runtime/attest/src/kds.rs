//! kds
