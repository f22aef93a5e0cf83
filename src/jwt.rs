//! JWT authentication: providers, key sets (inline and remote), verification, cache.
