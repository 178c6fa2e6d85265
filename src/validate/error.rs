//! `ValidateError`: every way a request can fail validation, with the field at fault (the
//! OpenAI envelope's `param`); `api::error` maps each variant to its HTTP status.

use crate::budget::BudgetError;
use crate::sample::SamplingParamsError;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidateError {
    /// A field of the wrong type, shape or range.
    #[error("{message}")]
    Invalid { param: String, message: String },
    #[error(transparent)]
    Sampling(#[from] SamplingParamsError),
    #[error(
        "this model's maximum context length is {limit} tokens, but {} tokens were requested \
         ({prompt} in the prompt + {max_tokens} for the completion); reduce the prompt or `max_tokens`",
        prompt.saturating_add(*max_tokens)
    )]
    ContextOverflow {
        /// `messages` or `prompt`.
        param: &'static str,
        limit: usize,
        prompt: usize,
        max_tokens: usize,
    },
    #[error("the model `{given}` does not exist; this server serves `{served}`")]
    ModelNotFound { given: String, served: String },
    /// Tokenizer failure (not the client's fault).
    #[error("{0}")]
    Internal(String),
}

impl From<BudgetError> for ValidateError {
    fn from(e: BudgetError) -> Self {
        ValidateError::invalid(e.param, e.message)
    }
}

impl From<crate::tools::ToolError> for ValidateError {
    fn from(e: crate::tools::ToolError) -> Self {
        ValidateError::invalid(e.param, e.message)
    }
}

impl ValidateError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ValidateError::Invalid {
            param: param.into(),
            message: message.into(),
        }
    }

    /// The request field at fault (the OpenAI envelope's `param`).
    pub fn param(&self) -> Option<String> {
        match self {
            Self::Invalid { param, .. } => Some(param.clone()),
            Self::Sampling(e) => Some(e.param().to_string()),
            Self::ContextOverflow { param, .. } => Some(param.to_string()),
            Self::ModelNotFound { .. } => Some("model".to_string()),
            Self::Internal(_) => None,
        }
    }
}
