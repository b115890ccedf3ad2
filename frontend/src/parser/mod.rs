//! The low-level Dockerfile parser: logical lines, directives, heredocs and the AST.
