//! End-to-end kit. (in progress)
