//! Errors of typing instructions; messages follow BuildKit's where it has one.

/// Why an instruction was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstructionErrorKind {
    #[error("unknown instruction: {0}")]
    UnknownInstruction(String),
    #[error("unknown flag: --{0}")]
    UnknownFlag(String),
    #[error("Duplicate flag specified: --{0}")]
    DuplicateFlag(String),
    #[error("Missing a value on flag: --{0}")]
    MissingFlagValue(String),
    #[error("expecting boolean value for flag {flag}, not: {value}")]
    BadBool { flag: String, value: String },
    #[error("{0} requires exactly one argument")]
    ExactlyOne(String),
    #[error("{0} requires at least one argument")]
    AtLeastOne(String),
    #[error("{0} requires at least two arguments")]
    AtLeastTwo(String),
    #[error("{0} requires at least two arguments, but only one was provided. Destination could not be determined")]
    NoDestination(String),
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChain,
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    OnbuildForbidden(String),
    #[error("FROM requires either one or three arguments")]
    FromArgs,
    #[error(
        "invalid name for build stage: {0:?}, name can't start with a number or contain symbols"
    )]
    StageName(String),
    #[error("no build stage in current context: {0} must come after a FROM")]
    NoStage(String),
    #[error("{0} requires the arguments to be in JSON form")]
    NotJson(String),
    #[error("{0}")]
    Invalid(String),
}

/// An instruction error with the place it concerns (1-based; column 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct InstructionError {
    pub kind: InstructionErrorKind,
    pub line: usize,
    pub end_line: usize,
    pub column: usize,
}

pub(crate) fn invalid(msg: impl Into<String>) -> InstructionErrorKind {
    InstructionErrorKind::Invalid(msg.into())
}
