//! Failed-authentication lockout. (Issue 5.)
