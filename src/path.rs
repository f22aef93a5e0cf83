//! Request path normalisation (shared by rule matching and audit).
