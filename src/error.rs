//! The one error type of rollcall and its single mapping to GraphQL errors.
//!
//! Resolvers return `AppError` (through async-graphql's `Error`, which keeps it as the source);
//! [`finalize_response`] then turns every error of a response into a client-safe message with an
//! `extensions.code`. Anything that is not an `AppError` is logged and masked.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::Arc;

use async_graphql::{ErrorExtensionValues, Response, Value};
use sea_orm::DbErr;

/// Why each refused field was refused, keyed by the input field name the client sent.
pub type FieldErrors = BTreeMap<String, FieldError>;

/// Why one field was refused: a stable code a client can branch on or translate, and a short
/// English message it can show as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub code: FieldCode,
    pub message: Cow<'static, str>,
}

impl FieldError {
    pub fn new(code: FieldCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// BAD_USER_INPUT with this reason on `field`.
    pub fn on(self, field: &str) -> AppError {
        AppError::BadInput(BTreeMap::from([(field.to_owned(), self)]))
    }
}

/// The codes of `extensions.fieldCodes`. Clients depend on their names: add, never rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldCode {
    /// The field must be given in this request.
    Required,
    /// Too short or too long.
    Length,
    /// Characters or syntax the field does not take.
    Format,
    /// A number or time outside what the field takes.
    Range,
    /// A new password that is common or easy to guess.
    WeakPassword,
    /// A new password that contains the username or the email's local part.
    PersonalPassword,
    /// A password or code that does not match.
    Incorrect,
    /// A one-time code that was right but has been accepted once already.
    Used,
    /// Already used by another account (or by an earlier row of an import).
    Taken,
    /// Names something that does not exist.
    NotFound,
    /// A value this operation does not take (with the message saying why).
    NotAllowed,
}

impl FieldCode {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldCode::Required => "REQUIRED",
            FieldCode::Length => "LENGTH",
            FieldCode::Format => "FORMAT",
            FieldCode::Range => "RANGE",
            FieldCode::WeakPassword => "WEAK_PASSWORD",
            FieldCode::PersonalPassword => "PERSONAL_PASSWORD",
            FieldCode::Incorrect => "INCORRECT",
            FieldCode::Used => "USED",
            FieldCode::Taken => "TAKEN",
            FieldCode::NotFound => "NOT_FOUND",
            FieldCode::NotAllowed => "NOT_ALLOWED",
        }
    }
}

/// The cause of an internal error, kept for the log (shared: async-graphql clones errors).
pub type Source = Arc<dyn StdError + Send + Sync + 'static>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("invalid input")]
    BadInput(FieldErrors),
    #[error("already in use")]
    Conflict(FieldErrors),
    #[error("{0}")]
    NotFound(&'static str),
    /// The account has two-factor login on: the login needs a (right, unused) code.
    #[error("{0}")]
    TotpRequired(&'static str),
    /// A sensitive action needs the password or a TOTP code again.
    #[error("{0}")]
    VerificationRequired(&'static str),
    /// Too many attempts; the client may try again after `retry_after_seconds`.
    #[error("{message}")]
    RateLimited {
        message: &'static str,
        retry_after_seconds: u64,
    },
    /// The request ran past `ROLLCALL_REQUEST_TIMEOUT`; nothing it started was kept.
    #[error("{0}")]
    Timeout(&'static str),
    /// A mutation field not run because one before it in the document failed.
    #[error("{0}")]
    NotRun(&'static str),
    /// Shown to clients as a generic message; the context and its source chain go to the log.
    #[error("{context}")]
    Internal {
        context: &'static str,
        #[source]
        source: Option<Source>,
    },
}

impl AppError {
    /// The code of [`AppError::Timeout`], which the HTTP layer also recognises in answers.
    pub const TIMEOUT_CODE: &'static str = "TIMEOUT";

    pub fn code(&self) -> &'static str {
        match self {
            AppError::Unauthenticated(_) => "UNAUTHENTICATED",
            AppError::Forbidden(_) => "FORBIDDEN",
            AppError::BadInput(_) => "BAD_USER_INPUT",
            AppError::Conflict(_) => "CONFLICT",
            AppError::NotFound(_) => "NOT_FOUND",
            AppError::TotpRequired(_) => "TOTP_REQUIRED",
            AppError::VerificationRequired(_) => "VERIFICATION_REQUIRED",
            AppError::RateLimited { .. } => "RATE_LIMITED",
            AppError::Timeout(_) => Self::TIMEOUT_CODE,
            AppError::NotRun(_) => "NOT_RUN",
            AppError::Internal { .. } => "INTERNAL_SERVER_ERROR",
        }
    }

    /// A BAD_USER_INPUT error on one field.
    pub fn field(field: &str, code: FieldCode, message: impl Into<Cow<'static, str>>) -> Self {
        FieldError::new(code, message).on(field)
    }

    /// An internal error with no underlying cause (a broken invariant).
    pub fn internal(context: &'static str) -> Self {
        AppError::Internal {
            context,
            source: None,
        }
    }

    /// An internal error caused by `source`.
    pub fn internal_from(
        context: &'static str,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        AppError::Internal {
            context,
            source: Some(Arc::new(source)),
        }
    }

    /// RATE_LIMITED, to be retried after `wait` (rounded up to whole seconds, at least one).
    pub fn rate_limited(message: &'static str, wait: std::time::Duration) -> Self {
        AppError::RateLimited {
            message,
            retry_after_seconds: wait.as_millis().div_ceil(1000).max(1) as u64,
        }
    }

    /// The message a client may see.
    fn public_message(&self) -> String {
        match self {
            AppError::Internal { .. } => INTERNAL_MESSAGE.to_owned(),
            AppError::BadInput(_) => "Invalid input".to_owned(),
            AppError::Conflict(_) => "Already in use".to_owned(),
            other => other.to_string(),
        }
    }
}

pub const INVALID_CREDENTIALS: AppError = AppError::Unauthenticated("Invalid credentials");
/// The answer to a request that needs a signed-in caller and carries no token.
pub const AUTHENTICATION_REQUIRED: AppError = AppError::Unauthenticated("Authentication required");
/// The answer to every access or refresh token that fails, whatever failed: expired, forged,
/// or of a session that has ended.
pub const INVALID_TOKEN: AppError = AppError::Unauthenticated("Invalid or expired token");
pub const INTERNAL_MESSAGE: &str = "Internal server error";

/// The answer to a request past its time: `ROLLCALL_REQUEST_TIMEOUT`, or a statement's
/// timeout, which a server sets no longer than it.
pub const TIMED_OUT: AppError = AppError::Timeout(
    "The request took too long and was stopped; its unfinished work was rolled back",
);

impl From<DbErr> for AppError {
    fn from(err: DbErr) -> Self {
        // The statement's timeout and the request's run out together when the request's is
        // the shorter: the answer must not depend on which fires first.
        if crate::db::statement_timed_out(&err) {
            tracing::warn!(error = %chain(&err), "a statement ran past its timeout; its work was rolled back");
            return TIMED_OUT;
        }
        AppError::internal_from("database", err)
    }
}

impl From<tokio::task::JoinError> for AppError {
    fn from(err: tokio::task::JoinError) -> Self {
        AppError::internal_from("task", err)
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// `err` and every cause below it, for the log.
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let causes = || {
        std::iter::successors(Some(err), |&cause: &&(dyn StdError + 'static)| {
            cause.source()
        })
    };
    // PostgreSQL's errors end in the line of its own source that raised them ("database
    // \"x\" does not exist at line 948"), which reads as a line of the operator's input.
    let line = causes().find_map(|cause| {
        // A database error kept by [`AppError::Internal`] is behind its `Arc`.
        let kept = cause.downcast_ref::<Source>().map(|kept| &**kept);
        kept.and_then(|kept| kept.downcast_ref::<sea_orm::DbErr>())
            .or_else(|| cause.downcast_ref::<sea_orm::DbErr>())
            .and_then(crate::db::postgres_source_line)
    });
    let said = |cause: &(dyn StdError + 'static)| match line {
        Some(line) => cause.to_string().replace(&format!(" at line {line}"), ""),
        None => cause.to_string(),
    };
    let mut text = said(err);
    for cause in causes().skip(1) {
        // Many errors repeat their cause's text in their own.
        let cause_text = said(cause);
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
    }
    text
}

/// Gives every error of a response a safe message and an `extensions.code`.
pub fn finalize_response(response: &mut Response) {
    for error in &mut response.errors {
        let mut extensions = error.extensions.take().unwrap_or_default();
        if let Some(app) = error.source::<AppError>() {
            if let AppError::Internal { .. } = app {
                let path = error.path.iter().map(|segment| match segment {
                    async_graphql::PathSegment::Field(name) => name.clone(),
                    async_graphql::PathSegment::Index(index) => index.to_string(),
                });
                let path = path.collect::<Vec<_>>().join(".");
                tracing::error!(path, error = %chain(app), "internal error");
            }
            let message = app.public_message();
            extensions.set("code", app.code());
            if let AppError::BadInput(fields) | AppError::Conflict(fields) = app {
                extensions.set("fields", fields_value(fields, |e| e.message.to_string()));
                extensions.set(
                    "fieldCodes",
                    fields_value(fields, |e| e.code.as_str().into()),
                );
            }
            if let AppError::RateLimited {
                retry_after_seconds,
                ..
            } = app
            {
                extensions.set("retryAfterSeconds", *retry_after_seconds);
            }
            error.message = message;
        } else if error.source.is_some() {
            // A foreign error reached a resolver's `?`: never show its text.
            tracing::error!(path = ?error.path, message = %error.message, "unmapped error");
            error.message = INTERNAL_MESSAGE.to_owned();
            extensions = ErrorExtensionValues::default();
            extensions.set("code", "INTERNAL_SERVER_ERROR");
        } else if extensions.get("code").is_none() {
            // Parse, validation and input-coercion errors from the GraphQL engine itself.
            extensions.set("code", "BAD_USER_INPUT");
        }
        error.extensions = Some(extensions);
    }
    // async-graphql validates some documents in two walks that each report the same problem
    // (a subscription, which this schema lacks): each is said once.
    let mut seen = std::collections::HashSet::new();
    response.errors.retain(|error| {
        let at: Vec<(usize, usize)> = error.locations.iter().map(|p| (p.line, p.column)).collect();
        !error.path.is_empty() || seen.insert((error.message.clone(), at))
    });
    // Errors about the document itself have no path.
    let about_document = response.errors.iter().filter(|e| e.path.is_empty()).count();
    if about_document > MAX_DOCUMENT_ERRORS {
        // The first in the document, whatever order the engine found them in.
        response.errors.sort_by_key(|error| {
            let at = error.locations.first().map(|p| (p.line, p.column));
            (!error.path.is_empty(), at)
        });
        let mut kept = 0;
        response.errors.retain(|error| {
            kept += usize::from(error.path.is_empty());
            !error.path.is_empty() || kept <= MAX_DOCUMENT_ERRORS
        });
        let left_out = about_document - MAX_DOCUMENT_ERRORS;
        let said = if left_out == 1 {
            "1 more error in the document is left out".to_owned()
        } else {
            format!("{left_out} more errors in the document are left out")
        };
        let mut more = async_graphql::ServerError::new(said, None);
        let mut extensions = ErrorExtensionValues::default();
        extensions.set("code", "BAD_USER_INPUT");
        more.extensions = Some(extensions);
        response.errors.push(more);
    }
}

/// The most errors about the document itself an answer lists: a 16 KiB document can make
/// thousands, and a client mends its query from the first ones.
const MAX_DOCUMENT_ERRORS: usize = 100;

fn fields_value(fields: &FieldErrors, part: impl Fn(&FieldError) -> String) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(k, v)| (async_graphql::Name::new(k), Value::String(part(v))))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_keep_their_cause_for_the_log_only() {
        let err = AppError::from(DbErr::Custom("connection reset".into()));
        assert_eq!(err.public_message(), INTERNAL_MESSAGE);
        let logged = chain(&err);
        assert!(logged.starts_with("database: "), "{logged}");
        assert!(logged.contains("connection reset"), "{logged}");
    }
}
