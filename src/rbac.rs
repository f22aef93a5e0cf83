//! Authorization: the compiled RBAC matrix and route rules. (Issue 3.)
