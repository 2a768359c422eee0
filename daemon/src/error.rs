//! Error plumbing every layer shares. It sits at the bottom of the crate: it imports nothing of
//! veer, so the control layer, the API, the metrics and the command line can all use it.

/// An error and its causes on one line, `what: because: because`, for logs, API answers and
/// the command line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        // `#[error(transparent)]` and `{source}`-in-message errors repeat their cause.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cur = c.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("applying revision 3 failed")]
    struct Outer {
        #[source]
        source: Middle,
    }

    #[derive(Debug, thiserror::Error)]
    enum Middle {
        #[error(transparent)]
        Io(#[from] std::io::Error),
    }

    #[test]
    fn causes_are_joined_once_each() {
        let e = Outer {
            source: Middle::Io(std::io::Error::other("disk full")),
        };
        assert_eq!(chain(&e), "applying revision 3 failed: disk full");
    }
}
