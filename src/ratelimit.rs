//! Token buckets over the host's shared store. (Issue 5.)
