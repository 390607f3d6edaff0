//! The one error body every JSON route returns: `{"error": "<machine_code>", "message": "…"}`.

use serde::{Deserialize, Serialize};

/// Body of every non-2xx JSON response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable, machine-readable code in snake_case (`invalid_username`, `rate_limited`, …).
    pub error: String,
    /// One human sentence saying what went wrong and, where it helps, what to do.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_documented_shape() {
        let body = ErrorBody {
            error: "unauthorized".into(),
            message: "Sign in first.".into(),
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"error":"unauthorized","message":"Sign in first."}"#
        );
    }
}
