//! The request/response pipeline: authn -> lockout -> rbac -> rate -> redact -> audit.
