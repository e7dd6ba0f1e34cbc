//! model_seal
