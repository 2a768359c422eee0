//! Exit codes, the only place they are defined.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | error (the message says what and where) |
//! | 2 | usage (bad flags or arguments; clap prints the usage) |
//! | 3 | timeout (e.g. `drain --wait`) |

use std::process::ExitCode;

/// Exit code 0: the command did what was asked (or it was already so).
pub const OK: u8 = 0;
/// An error.
pub const ERROR: u8 = 1;
/// Bad usage.
pub const USAGE: u8 = 2;
/// A wait timed out.
pub const TIMEOUT: u8 = 3;

/// A failed command: the message to print and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// What went wrong, with its causes.
    pub message: String,
}

impl Failure {
    /// An error (exit 1) from any error, with its chain of causes.
    pub fn error(e: &dyn std::error::Error) -> Self {
        Self {
            code: ERROR,
            message: crate::error::chain(e),
        }
    }

    /// A usage error (exit 2).
    pub fn usage(message: String) -> Self {
        Self {
            code: USAGE,
            message,
        }
    }

    /// A timeout (exit 3).
    pub fn timeout(message: String) -> Self {
        Self {
            code: TIMEOUT,
            message,
        }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}
