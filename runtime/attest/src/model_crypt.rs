//! model_crypt
